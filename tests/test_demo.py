"""End to end in one process, on tiny synthetic data: both demo configs train for two
iterations with tools/train.py, and tools/test.py evaluates the checkpoint (mIoU; bbox and
segm AP) and draws the predictions.

train.py and test.py run as ``python tools/...`` in fresh processes, as a user runs them.
Run through their main(argv) in the test's process, the runs share mmengine's per-process
state (visualizer instances, the default scope): tried, the seg demo's test run after the
others drew no predictions. The data makers run in this process (their own ``__main__``,
same command line)."""
import glob
import json
import os.path as osp
import runpy
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMOS = {
    'seg': ('configs/demo/upernet_globalmamba-tiny_synthetic-seg.py', 'make_synthetic_seg.py',
            ['mIoU']),
    'coco': ('configs/demo/mask-rcnn_globalmamba-tiny_synthetic-coco.py',
             'make_synthetic_coco.py', ['coco/bbox_mAP', 'coco/segm_mAP']),
}


def run(args):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def make_data(monkeypatch, maker, args):
    """tools/<maker> with these arguments, in this process."""
    monkeypatch.setattr(sys, 'argv', [f'tools/{maker}', *args])
    runpy.run_path(osp.join(ROOT, 'tools', maker), run_name='__main__')


@pytest.mark.slow
@pytest.mark.parametrize('demo', sorted(DEMOS))
def test_demo_train_test(demo, tmp_path, monkeypatch):
    config, maker, metric_keys = DEMOS[demo]
    data = tmp_path / 'data'
    make_data(monkeypatch, maker, ['--out', str(data), '--num-train', '4', '--num-val', '2',
                                   '--size', '64'])
    root = f'{data}/' if demo == 'coco' else str(data)
    options = [f'{split}_dataloader.dataset.data_root={root}'
               for split in ('train', 'val', 'test')]
    options += ['train_dataloader.batch_size=2', 'model.backbone.img_size=64']
    if demo == 'coco':
        ann = f'{data}/annotations/instances_val.json'
        options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    else:
        options += ['model.data_preprocessor.size=[64,64]']
    work = tmp_path / 'work'
    run(['tools/train.py', config, '--work-dir', str(work), '--cfg-options',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=100', *options])
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    vis = tmp_path / 'vis'
    run(['tools/test.py', config, str(ckpt), '--work-dir', str(work / 'test'),
         '--show-dir', str(vis), '--cfg-options', *options])
    metrics = json.loads((work / 'test' / 'test_metrics.json').read_text())
    for key in metric_keys:
        assert key in metrics, metrics
    drawn = glob.glob(str(vis / '**' / '*.*g'), recursive=True)
    assert len(drawn) == 2, drawn
