"""What one full train step costs: time and peak memory of forward, loss, backward and the
optimizer step, for a backbone or a whole mmseg / mmdet model.

A step is what the Runner does per iteration: ``model.train_step(data, optim_wrapper)``
(data preprocessor, losses, backward, optimizer step, zero grad) for full models, and for a
bare backbone the same with the mean of its outputs as the loss. Inputs are random images
with random but valid targets (a segmentation map, or boxes with rectangular masks), so that
every head runs its real loss. Peak memory is :class:`~.benchmark.PeakMemory`: CUDA
``max_memory_allocated``, CPU the resident-set high-water mark, above the memory held
before the first step (model, optimizer state after the first step is included).

:func:`time_train_step_in_child` runs one row in a fresh Python process, optionally under
another CPU allocator (:mod:`mmglobalmamba.engine.cpu_allocator`): a row's resident set
then owes nothing to the heap earlier rows left behind. ``python -m
mmglobalmamba.analysis.train_step JSON`` is that child.
"""
import copy
import json
import os
import os.path as osp
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from .benchmark import PeakMemory

__all__ = ['TrainStepResult', 'row_name', 'synthetic_train_batch', 'build_train_setup',
           'time_train_step', 'time_train_step_in_child', 'format_train_table', 'with_cp_savings',
           'train_targets']


@dataclass
class TrainStepResult:
    """One row: ``ms_per_step`` over the timed steps, ``best_ms`` the fastest one,
    ``losses`` the total loss of every step (warm-up included), ``allocator`` the CPU
    malloc that served it, ``error`` why it failed."""
    name: str
    shape: tuple
    batch_size: int
    with_cp: bool
    precision: str
    steps: int
    ms_per_step: float = float('nan')
    best_ms: float = float('nan')
    peak_mib: float = float('nan')
    peak_exact: bool = True
    losses: tuple = ()
    allocator: str = ''
    error: str = ''


def synthetic_train_batch(task, shape, batch, num_classes, seed=0):
    """A ``train_step`` batch of ``batch`` random (H, W) = ``shape`` uint8 images with
    targets: ``task`` 'seg' (mmseg, label map) or 'det' (mmdet, 1-3 boxes with masks)."""
    H, W = shape
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=gen)
              for _ in range(batch)]
    meta = dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W), scale_factor=(1., 1.),
                flip=False, flip_direction=None)
    samples = []
    for _ in range(batch):
        if task == 'seg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=dict(meta, reduce_zero_label=False))
            labels = torch.randint(0, num_classes, (1, H, W), generator=gen)
            sample.gt_sem_seg = PixelData(data=labels)
        elif task == 'det':
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=meta)
            n = int(torch.randint(1, 4, (1, ), generator=gen))
            xy = torch.rand(n, 2, generator=gen) * torch.tensor([W / 2, H / 2])
            wh = (0.2 + 0.3 * torch.rand(n, 2, generator=gen)) * torch.tensor([W, H])
            boxes = torch.cat([xy, xy + wh], 1).floor()
            masks = torch.zeros(n, H, W, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            sample.gt_instances = InstanceData(
                bboxes=boxes, labels=torch.randint(0, num_classes, (n, ), generator=gen),
                masks=BitmapMasks(masks.numpy(), H, W))
        else:
            raise ValueError(f"task must be 'seg' or 'det', got {task!r}")
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


class _BackboneStep(torch.nn.Module):
    """A bare backbone with mmengine's ``train_step`` (loss: mean of all outputs)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def train_step(self, data, optim_wrapper):
        with optim_wrapper.optim_context(self):
            outs = self.backbone(data['inputs'])
            loss = sum(o.float().mean() for o in outs)
            del outs  # as a head would, let the backward free each output once it is used
        optim_wrapper.update_params(loss)
        return dict(loss=loss.detach())


def _amp_wrapper_cfg(optim_cfg, precision, device):
    from mmglobalmamba.engine import enable_amp
    from mmengine.config import ConfigDict
    holder = ConfigDict(optim_wrapper=copy.deepcopy(optim_cfg))
    if precision != 'fp32':
        enable_amp(holder, dict(fp16='float16', bf16='bfloat16')[precision], device.type)
    return holder.optim_wrapper


def build_train_setup(what, with_cp=False, precision='fp32', device='cpu', cfg_options=None):
    """(model, optim_wrapper, task, num_classes) ready for :func:`time_train_step`.

    ``what``: a backbone preset name ('tiny', 'small') or an mmseg / mmdet config path.
    ``precision``: 'fp32', 'fp16' (CUDA) or 'bf16'. Configs use their own optimizer and
    layer-decay constructor; backbones AdamW (lr 1e-4, weight decay 0.05).
    """
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from .complexity import build_backbone, build_model_from_config
    device = torch.device(device)
    if what.endswith('.py'):
        cfg = Config.fromfile(what)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        cfg.merge_from_dict({'model.backbone.with_cp': with_cp})
        model, task = build_model_from_config(cfg)
        head = cfg.model.get('decode_head') or cfg.model.get('roi_head', {}).get('bbox_head')
        num_classes = head['num_classes']
        optim_cfg = cfg.optim_wrapper
    else:
        model, task, num_classes = _BackboneStep(build_backbone(what, with_cp=with_cp)), \
            'backbone', 1
        optim_cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4,
                                                             weight_decay=0.05))
    model = model.to(device).train()
    optim_wrapper = build_optim_wrapper(model, _amp_wrapper_cfg(optim_cfg, precision, device))
    return model, optim_wrapper, task, num_classes


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _total_loss(log_vars):
    loss = log_vars['loss']
    return float(loss.item() if isinstance(loss, torch.Tensor) else loss)


def row_name(what):
    """The table name of ``what``: a config's file stem, or 'GlobalMamba-<preset>'."""
    return osp.splitext(osp.basename(what))[0] if what.endswith('.py') \
        else f'GlobalMamba-{what}'


def time_train_step(what, shape, batch_size=2, with_cp=False, precision='fp32', device='cpu',
                    iters=3, warmup=1, name=None, cfg_options=None):
    """Build ``what`` (see :func:`build_train_setup`) and time ``warmup + iters`` full
    train steps on one synthetic batch. A step that fails (e.g. a detector under CPU
    autocast, inside mmcv's float32-only NMS) gives a row with ``error`` set."""
    device = torch.device(device)
    from mmglobalmamba.engine.cpu_allocator import loaded_allocator
    result = TrainStepResult(name=name or row_name(what), shape=tuple(shape), batch_size=batch_size,
                             with_cp=with_cp, precision=precision, steps=iters,
                             allocator=loaded_allocator())
    model, optim_wrapper, task, num_classes = build_train_setup(
        what, with_cp, precision, device, cfg_options)
    if task == 'backbone':  # no data preprocessor: normalized images on the device
        gen = torch.Generator().manual_seed(0)
        data = dict(inputs=torch.randn(batch_size, 3, *shape, generator=gen).to(device))
    else:
        data = synthetic_train_batch(task, shape, batch_size, num_classes)
    losses, times = [], []
    try:
        with PeakMemory(device) as mem:
            for i in range(warmup + iters):
                _sync(device)
                start = time.perf_counter()
                log_vars = model.train_step(data, optim_wrapper)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
                losses.append(_total_loss(log_vars))
    except (RuntimeError, ValueError) as err:
        result.error = f'{type(err).__name__}: {str(err).splitlines()[0][:120]}'
        return result
    finally:
        del model, optim_wrapper
    result.ms_per_step = 1000 * sum(times) / len(times)
    result.best_ms = 1000 * min(times)
    result.peak_mib, result.peak_exact = mem.peak_mib, mem.exact
    result.losses = tuple(losses)
    return result


_RESULT_TAG = 'TRAIN_STEP_RESULT '


def time_train_step_in_child(what, shape, batch_size=2, with_cp=False, precision='fp32',
                             device='cpu', iters=3, warmup=1, name=None, backend=None,
                             allocator=None, timeout=None):
    """:func:`time_train_step` in a fresh Python process (under the CPU ``allocator``,
    'glibc' / 'tcmalloc' / 'jemalloc'; None: this process's environment) with the scan
    ``backend``. A child that dies (killed for memory, say) gives a row with ``error``."""
    from mmglobalmamba.engine.cpu_allocator import allocator_env
    kwargs = dict(what=what, shape=list(shape), batch_size=batch_size, with_cp=with_cp,
                  precision=precision, device=str(device), iters=iters, warmup=warmup,
                  name=name, backend=backend)
    env = allocator_env(allocator) if allocator else dict(os.environ)
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    env['PYTHONPATH'] = os.pathsep.join(p for p in (root, env.get('PYTHONPATH')) if p)
    proc = subprocess.run([sys.executable, '-m', __name__, json.dumps(kwargs)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            fields = json.loads(line[len(_RESULT_TAG):])
            fields['shape'], fields['losses'] = tuple(fields['shape']), tuple(fields['losses'])
            return TrainStepResult(**fields)
    result = TrainStepResult(name=name or row_name(what), shape=tuple(shape), batch_size=batch_size,
                             with_cp=with_cp, precision=precision, steps=iters,
                             allocator=allocator or '')
    tail = (proc.stderr.strip().splitlines() or [''])[-1][:120]
    result.error = f'child exited with {proc.returncode}: {tail}'
    return result


def _child_main(argv):
    """The child of :func:`time_train_step_in_child`: one row, printed as tagged JSON."""
    import dataclasses
    import warnings
    warnings.filterwarnings('ignore')
    from mmglobalmamba.ops import scan_backend
    kwargs = json.loads(argv[0])
    backend = kwargs.pop('backend')
    kwargs['shape'] = tuple(kwargs['shape'])
    with scan_backend(backend):
        result = time_train_step(**kwargs)
    print(_RESULT_TAG + json.dumps(dataclasses.asdict(result)), flush=True)


def _fmt_mib(r):
    return f'{r.peak_mib:.0f}' + ('' if r.peak_exact else ' (>=)')


def format_train_table(results, markdown=False):
    """The rows of :func:`time_train_step` as a plain or markdown table."""
    header = ['model', 'input', 'batch', 'with_cp', 'precision', 'ms/step', 'best ms',
              'peak MiB', 'first / last loss']
    rows = []
    for r in results:
        row = [r.name, f'{r.shape[0]}x{r.shape[1]}', str(r.batch_size),
               'on' if r.with_cp else 'off', r.precision]
        if r.error:
            row += ['failed', '', '', r.error]
        else:
            row += [f'{r.ms_per_step:.0f}', f'{r.best_ms:.0f}', _fmt_mib(r),
                    f'{r.losses[0]:.4f} / {r.losses[-1]:.4f}']
        rows.append(row)
    if markdown:
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        lines = ['  '.join(h.ljust(w) for h, w in zip(header, widths))]
        lines += ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return '\n'.join(lines)


def _find(results, **match):
    for r in results:
        if not r.error and all(getattr(r, k) == v for k, v in match.items()):
            return r
    return None


def with_cp_savings(results):
    """[(row without cp, row with cp, memory ratio off/on, time ratio on/off)] for every
    pair of rows that differ only in ``with_cp``. Time ratios compare the fastest step of
    each row (other processes on the machine only ever slow a step down)."""
    pairs = []
    for off in results:
        if off.error or off.with_cp:
            continue
        on = _find(results, name=off.name, shape=off.shape, batch_size=off.batch_size,
                   precision=off.precision, with_cp=True)
        if on is not None:
            pairs.append((off, on, off.peak_mib / max(on.peak_mib, 1e-9),
                          on.best_ms / off.best_ms))
    return pairs


def train_targets(results, device_type):
    """Lines saying what ``with_cp`` saves and how GlobalMamba's step compares with Vim's,
    and whether the project's targets are met (the with_cp target: tiny backbone,
    800x1344, batch 2, fp32, at least 3x less memory for at most 1.4x the time; on CUDA,
    UperNet-GlobalMamba-T no slower than UperNet-Vim-T)."""
    lines = ['', 'with_cp: peak memory without / with, step time with / without (best step)']
    for off, on, mem, t in with_cp_savings(results):
        lines.append(f'  {off.name} {off.shape[0]}x{off.shape[1]} b{off.batch_size} '
                     f'{off.precision}: memory {mem:.2f}x less ({_fmt_mib(off)} -> '
                     f'{_fmt_mib(on)} MiB), time {t:.2f}x')
    target = [p for p in with_cp_savings(results) if p[0].name == 'GlobalMamba-tiny'
              and p[0].shape == (800, 1344) and p[0].batch_size == 2
              and p[0].precision == 'fp32']
    if target:
        _, _, mem, t = target[0]
        ok = mem >= 3 and t <= 1.4
        lines.append(f'target with_cp (tiny backbone, 800x1344, batch 2, fp32): memory '
                     f'{mem:.2f}x less (>= 3x), time {t:.2f}x (<= 1.4x): '
                     f'{"MET" if ok else "MISSED"}')
    else:
        lines.append('target with_cp: not measured (needs --arch tiny@800x1344 '
                     '--batch-size 2 with fp32 and --with-cp both)')
    lines.append('GlobalMamba / Vim step time (best step; UperNet, same input, batch, '
                 'with_cp, precision):')
    found = False
    for gm in results:
        if gm.error or not gm.name.startswith('upernet_globalmamba_ade20k'):
            continue
        vim = _find(results, name='upernet_vim-tiny_ade20k', shape=gm.shape,
                    batch_size=gm.batch_size, with_cp=gm.with_cp, precision=gm.precision)
        if vim is None:
            continue
        found = True
        ratio = gm.best_ms / vim.best_ms
        verdict = ('MET' if ratio <= 1.0 else 'MISSED') if device_type == 'cuda' else \
            'target applies on CUDA'
        lines.append(f'  {gm.shape[0]}x{gm.shape[1]} b{gm.batch_size} cp='
                     f'{"on" if gm.with_cp else "off"} {gm.precision}: {ratio:.2f}x '
                     f'(<= 1.0 on CUDA: {verdict})')
    if not found:
        lines.append('  not measured (needs configs/upernet_globalmamba_ade20k.py and '
                     'configs/upernet_vim-tiny_ade20k.py at the same size)')
    return lines


if __name__ == '__main__':
    _child_main(sys.argv[1:])
