"""Trial runs: a real config trained for a few iterations on generated data, then evaluated.

A trial run takes one of the project's ADE20K or COCO configs as it is (model, optimizer,
pipelines, evaluator), points its data at a small generated dataset in the same layout
(:mod:`mmglobalmamba.datasets`), replaces the schedule by ``iters`` iterations, trains with
mmengine's Runner and evaluates once on a few validation images. It reports iterations per
second, peak memory, the first and last loss and the metric, so that a GPU machine (or a
CPU one, at a small size) shows in minutes that the configs train end to end with the
kernels, mixed precision and ``with_cp``.

Sizes: at ``size=None`` the config's own training resolution (ADE20K: 512x512 crops; COCO:
images resized to 1333x800, i.e. 800x1344 after padding); a given ``size`` shrinks the
crops / resizes to that many pixels (CPU checks).
"""
import copy
import math
import os.path as osp
import time
from dataclasses import dataclass, field

import torch
from mmengine.hooks import Hook

from mmglobalmamba.benchmark.measure import PeakMemory, format_table, row_name, sync
from mmglobalmamba.registry import HOOKS

__all__ = ['TrialResult', 'TrialRecorderHook', 'trial_config', 'trial_run', 'make_trial_data',
           'format_trials']

SEG_IMAGE_SIZE = 512   # generated ADE20K-layout images at the real resolution
DET_IMAGE_SIZE = 800   # generated COCO-layout images (resized to 1333x800 by the pipeline)


@dataclass
class TrialResult:
    config: str
    with_cp: bool
    precision: str
    device: str
    iters: int
    input_shape: tuple = ()
    it_per_s: float = float('nan')
    peak_mib: float = float('nan')
    losses: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @property
    def finite(self):
        return bool(self.losses) and all(math.isfinite(v) for v in self.losses)


def _device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


@HOOKS.register_module()
class TrialRecorderHook(Hook):
    """Records the total loss of every train iteration, the time of the iterations after
    the first (which includes warm-up work such as kernel selection) and the input size."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.losses, self.times, self.input_shape = [], [], None
        self._start = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        sync(_device())
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        sync(_device())
        self.times.append(time.perf_counter() - self._start)
        loss = (outputs or {}).get('loss')
        self.losses.append(float(loss) if loss is not None else float('nan'))
        if self.input_shape is None and data_batch is not None:
            inputs = data_batch['inputs']
            first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            self.input_shape = tuple(first.shape[-2:])


def make_trial_data(task, root, size=None, num_train=8, num_val=4):
    """Generate the trial dataset for ``task`` ('seg' or 'det') under ``root``."""
    from mmglobalmamba.datasets import make_coco_dataset, make_seg_dataset
    if task == 'seg':
        make_seg_dataset(root, num_train, num_val, size or SEG_IMAGE_SIZE, seed=0)
    else:
        make_coco_dataset(root, num_train, num_val, size or DET_IMAGE_SIZE, seed=1,
                          splits=('train2017', 'val2017'))
    return root


def _pipelines(cfg):
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader]['dataset']
        yield loader, dataset['pipeline']


def _resize_transforms(pipeline, task, size):
    """Set the pipeline's resize / crop steps to the trial resolution."""
    for t in pipeline:
        kind = t['type']
        if task == 'det' and kind == 'Resize':
            # COCO images are 4:3 or so; the square generated ones are stretched to the
            # config's full 1333x800 (or the small trial size) so the token count is real
            t['keep_ratio'] = False
            if size:
                t['scale'] = (2 * size, size)
        if task == 'seg' and size:
            if kind in ('RandomResize', 'Resize'):
                t['scale'] = (4 * size, size)
            if kind == 'RandomCrop':
                t['crop_size'] = (size, size)


def trial_config(config, data_root, work_dir, iters=20, size=None, with_cp=False,
                 precision='fp32', num_val=4):
    """The config of a trial run (see the module docstring) as an mmengine ``Config``."""
    from mmengine.config import Config

    from mmglobalmamba.engine.config import syncbn_to_bn
    from mmglobalmamba.datasets import SHAPES

    from mmglobalmamba.engine.amp import enable_amp
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    task = {'mmseg': 'seg', 'mmdet': 'det'}.get(cfg.get('default_scope'))
    if task is None:
        raise ValueError(f'{config}: default_scope must be mmseg or mmdet for a trial run')
    cfg.work_dir = work_dir
    cfg.model.backbone.with_cp = with_cp
    cfg.model.backbone.init_cfg = None  # random init: no pretrained file on a check machine
    cfg.load_from, cfg.resume = None, False
    for loader, pipeline in _pipelines(cfg):
        _resize_transforms(pipeline, task, size)
        dataset = cfg[loader]['dataset']
        dataset['data_root'] = data_root
        cfg[loader]['num_workers'] = 0
        cfg[loader]['persistent_workers'] = False
        if task == 'det':
            dataset['metainfo'] = dict(classes=SHAPES)
            split = 'train2017' if loader == 'train_dataloader' else 'val2017'
            dataset['ann_file'] = f'annotations/instances_{split}.json'
            dataset['data_prefix'] = dict(img=f'{split}/')
    cfg.train_dataloader.batch_size = 2
    if task == 'seg':  # ADE20K's 150 classes are kept: the shapes use 4 of them
        if size:
            cfg.model.data_preprocessor.size = (size, size)
            test_cfg = cfg.model.get('test_cfg', {})
            if test_cfg.get('mode') == 'slide':
                test_cfg['crop_size'] = (size, size)
                test_cfg['stride'] = (2 * size // 3, 2 * size // 3)
    else:
        cfg.model.roi_head.bbox_head.num_classes = len(SHAPES)
        cfg.model.roi_head.mask_head.num_classes = len(SHAPES)
        for key in ('val_evaluator', 'test_evaluator'):
            cfg[key]['ann_file'] = osp.join(data_root, 'annotations/instances_val2017.json')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.val_cfg = dict(type='ValLoop')
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                                end=max(1, iters // 2))]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    cfg.default_hooks.checkpoint = None
    cfg.log_processor = dict(by_epoch=False)
    cfg.custom_hooks = [dict(type='TrialRecorderHook')]
    cfg.randomness = dict(seed=0)
    if precision != 'fp32':
        enable_amp(cfg, dict(fp16='float16', bf16='bfloat16')[precision])
    if not torch.cuda.is_available():
        cfg.model = syncbn_to_bn(cfg.model.to_dict())
    return cfg


def trial_run(config, data_root, work_dir, iters=20, size=None, with_cp=False,
              precision='fp32'):
    """Train ``config`` for ``iters`` iterations on the generated data under ``data_root``
    and evaluate once. Returns a :class:`TrialResult`."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cfg = trial_config(config, data_root, work_dir, iters, size, with_cp, precision)
    device = _device()
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    recorder = next(h for h in runner.hooks if isinstance(h, TrialRecorderHook))
    with PeakMemory(device) as mem:
        runner.train()
    metrics = runner.val()
    timed = recorder.times[1:] or recorder.times
    result = TrialResult(
        config=str(config), with_cp=with_cp, precision=precision, device=device, iters=iters,
        input_shape=recorder.input_shape or (), it_per_s=len(timed) / sum(timed),
        peak_mib=mem.peak_mib, losses=recorder.losses,
        metrics={k: float(v) for k, v in (metrics or {}).items()
                 if isinstance(v, (int, float))})
    del runner
    return result


def format_trials(results):
    """Trial results as one markdown table."""
    header = ['config', 'with_cp', 'precision', 'input', 'it/s', 'peak MiB', 'first loss',
              'last loss', 'metric']
    rows = []
    for r in results:
        metric = next(((k, v) for k, v in r.metrics.items()
                       if k.endswith(('mIoU', 'bbox_mAP'))), None)
        rows.append([row_name(r.config), 'on' if r.with_cp else 'off', r.precision,
                     'x'.join(map(str, r.input_shape)), f'{r.it_per_s:.2f}',
                     f'{r.peak_mib:.0f}', f'{r.losses[0]:.4f}', f'{r.losses[-1]:.4f}',
                     f'{metric[0]} {metric[1]:.3f}' if metric else '-'])
    return format_table(header, rows, markdown=True)
