"""Two CPU processes (torchrun, gloo) train the synthetic segmentation demo for a few
iterations through tools/dist_train.sh, write a checkpoint, resume from it (the
torch >= 2.6 ``weights_only`` path), then evaluate it through tools/dist_test.sh."""
import glob
import json
import os
import os.path as osp
import runpy
import socket
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/demo/upernet_globalmamba-tiny_synthetic-seg.py'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, env, timeout=600):
    """Run a launch; stdout and stderr interleaved in the order the ranks wrote them."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{proc.stdout[-6000:]}'
    return proc.stdout


@pytest.mark.slow
def test_dist_train_and_resume(tmp_path, monkeypatch):
    """Fresh processes are the point here: torchrun starts the two ranks (the data maker
    runs in this process, its own ``__main__`` with the same command line)."""
    data = tmp_path / 'data'
    monkeypatch.setattr(sys, 'argv', ['tools/make_synthetic_seg.py', '--out', str(data),
                                      '--num-train', '8', '--num-val', '4', '--size', '64'])
    runpy.run_path(osp.join(ROOT, 'tools', 'make_synthetic_seg.py'), run_name='__main__')
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    options = [
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}',
        'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
        'model.data_preprocessor.size=[64,64]',
        'model.backbone.img_size=64',
        'default_hooks.logger.interval=1',
    ]

    out = run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work),
               '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
               *options], env)
    assert 'rank 0/2 finished training' in out and 'rank 1/2 finished training' in out, out[-3000:]
    assert osp.isfile(work / 'iter_3.pth'), os.listdir(work)
    assert 'mIoU' in out  # distributed validation gathered results over gloo

    out = run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work),
               '--resume', '--cfg-options', 'train_cfg.max_iters=5', 'train_cfg.val_interval=5',
               *options], env)
    assert 'resumed' in out.lower(), out[-3000:]
    assert 'rank 0/2 finished training' in out and 'rank 1/2 finished training' in out
    assert osp.isfile(work / 'iter_5.pth'), sorted(glob.glob(str(work / '*.pth')))

    test_dir = tmp_path / 'test'
    out = run(['bash', 'tools/dist_test.sh', CONFIG, str(work / 'iter_5.pth'), '2',
               '--work-dir', str(test_dir), '--cfg-options', *options], env)
    assert out.count('metrics written to') == 1, out[-3000:]  # rank 0 only
    with open(test_dir / 'test_metrics.json') as f:
        assert 0 <= json.load(f)['mIoU'] <= 100
