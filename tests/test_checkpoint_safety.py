"""Safe checkpoint loading (torch >= 2.6, mmengine files) and SyncBN models on CPU."""
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

import mmglobalmamba  # noqa: F401  (installs the allow-list and the safe loader)
from mmglobalmamba.checkpoint_safety import UnsafeCheckpointError, safe_torch_load


class ToyModel(BaseModel):
    def __init__(self, norm='SyncBN'):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.SyncBatchNorm(4) if norm == 'SyncBN' else nn.BatchNorm2d(4)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.bn(self.conv(inputs)).mean((1, 2, 3))
        if mode == 'loss':
            return {'loss': ((out - labels) ** 2).mean()}
        return out


class ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 8, 8, generator=g), labels=torch.tensor(float(i)))


def _runner(work_dir, max_iters, **kwargs):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler'),
                              collate_fn=dict(type='default_collate'), batch_size=4,
                              num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                           by_epoch=False)),
        **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A work dir where the SyncBN model trained 2 iterations on CPU: iter_2.pth."""
    work_dir = tmp_path_factory.mktemp('trained')
    _runner(work_dir, 2).train()
    return work_dir


@pytest.fixture(scope='module')
def fresh_load(trained):
    """A new interpreter loading iter_2.pth, started as soon as it exists (it runs while
    the other tests of this file do)."""
    code = ('import torch, mmglobalmamba; '
            f"s = torch.load({str(trained / 'iter_2.pth')!r}, weights_only=True); "
            "print(sorted(s))")
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_syncbn_model_trains_single_process_on_cpu_and_resumes(trained, fresh_load,
                                                               tmp_path):
    """A SyncBN model runs on CPU in one process; its mmengine checkpoint (HistoryBuffer,
    numpy) loads under weights_only=True and training resumes from it."""
    ckpt = trained / 'iter_2.pth'
    assert ckpt.exists()
    state = torch.load(ckpt, weights_only=True)  # plain torch: the allow-list is enough
    assert 'message_hub' in state and 'optimizer' in state
    runner = _runner(tmp_path, 4, resume=True, load_from=str(ckpt))
    runner.train()
    assert runner.iter == 4 and (tmp_path / 'iter_4.pth').exists()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in runner.model.modules())


class _Exploit:
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_crafted_pickle_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    _Exploit.marker = str(marker)
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': _Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError, match='refused to load.*could execute code'):
        CheckpointLoader.load_checkpoint(str(path))  # the path mmengine's Runner takes
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(str(path))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


class _GetattrProbe:
    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def test_only_history_buffer_statistics_may_be_looked_up(tmp_path):
    """mmengine checkpoints need getattr(HistoryBuffer, 'min'); nothing wider passes."""
    path = tmp_path / 'probe.pth'
    torch.save({'meta': _GetattrProbe()}, path)
    with pytest.raises(UnsafeCheckpointError, match='only HistoryBuffer statistics'):
        safe_torch_load(str(path))


def test_mmengine_checkpoint_loads_in_a_fresh_process(fresh_load):
    """A new process (tools/test.py, resume) has built no HistoryBuffer yet when it loads."""
    stdout, stderr = fresh_load.communicate(timeout=300)
    assert fresh_load.returncode == 0, stderr[-3000:]
    assert 'message_hub' in stdout
