"""What one full train step costs: time and peak memory of forward, loss, backward and the
optimizer step, for a backbone or a whole mmseg / mmdet model.

A step is what the Runner does per iteration: ``model.train_step(data, optim_wrapper)``
(data preprocessor, losses, backward, optimizer step, zero grad) for full models, and for a
bare backbone the same with the mean of its outputs as the loss. Inputs are random images
with random but valid targets (a segmentation map, or boxes with rectangular masks), so that
every head runs its real loss (:mod:`mmglobalmamba.engine.synthetic_batch`). Peak memory
is :class:`~.measure.PeakMemory`, above the memory held before the first step (the
optimizer state made by the first step is included).

:func:`time_train_step_in_child` runs one row in a fresh Python process (:mod:`.child`),
optionally under another CPU allocator (:mod:`mmglobalmamba.engine.cpu_allocator`): a row's
resident set then owes nothing to the heap earlier rows left behind.
"""
import copy
import os
from dataclasses import dataclass

import torch

from .child import ChildFailed, run_in_child
from .measure import PeakMemory, format_table, row_name, time_interleaved

__all__ = ['TrainStepResult', 'build_train_setup', 'time_train_step',
           'time_train_step_in_child', 'format_train_table', 'with_cp_savings',
           'step_time_ratios']


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

    ``what``: a backbone preset name ('tiny', 'small') or arch dict (``embed_dims``,
    ``depth``), or an mmseg / mmdet config path.
    ``precision``: 'fp32', 'fp16' (CUDA) or 'bf16'. Configs use their own optimizer and
    layer-decay constructor; backbones AdamW (lr 1e-4, weight decay 0.05).
    """
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from mmglobalmamba.engine.config import build_backbone, build_model_from_config
    device = torch.device(device)
    if isinstance(what, str) and what.endswith('.py'):
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


def _total_loss(log_vars):
    loss = log_vars['loss']
    return float(loss.item() if isinstance(loss, torch.Tensor) else loss)


def time_train_step(what, shape, batch_size=2, with_cp=False, precision='fp32', device='cpu',
                    iters=3, warmup=1, name=None, cfg_options=None, backend=None):
    """Build ``what`` (see :func:`build_train_setup`) and time ``warmup + iters`` full
    train steps on one synthetic batch under ``scan_backend(backend)``. A step that fails
    (e.g. a detector under CPU autocast, inside mmcv's float32-only NMS) gives a row with
    ``error`` set."""
    from mmglobalmamba.engine.cpu_allocator import loaded_allocator
    from mmglobalmamba.engine.synthetic_batch import synthetic_batch
    from mmglobalmamba.ops import scan_backend
    device = torch.device(device)
    result = TrainStepResult(name=name or row_name(what), shape=tuple(shape),
                             batch_size=batch_size, with_cp=with_cp, precision=precision,
                             steps=iters, allocator=loaded_allocator())
    model, optim_wrapper, task, num_classes = build_train_setup(
        what, with_cp, precision, device, cfg_options)
    if task == 'backbone':  # no data preprocessor: normalized images on the device
        gen = torch.Generator().manual_seed(0)
        data = dict(inputs=torch.randn(batch_size, 3, *shape, generator=gen).to(device))
    else:
        data = synthetic_batch(task, shape, batch_size, num_classes)
    losses = []

    def step():
        losses.append(_total_loss(model.train_step(data, optim_wrapper)))

    try:
        with scan_backend(backend), PeakMemory(device) as mem:
            timings = time_interleaved({'step': step}, device, rounds=iters, warmup=warmup)
    except (RuntimeError, ValueError) as err:
        result.error = f'{type(err).__name__}: {str(err).splitlines()[0][:120]}'
        return result
    finally:
        del model, optim_wrapper
    times = timings.times['step']
    result.ms_per_step = 1000 * sum(times) / len(times)
    result.best_ms = 1000 * min(times)
    result.peak_mib, result.peak_exact = mem.peak_mib, mem.exact
    result.losses = tuple(losses)
    return result


def time_train_step_in_child(what, shape, batch_size=2, with_cp=False, precision='fp32',
                             device='cpu', iters=3, warmup=1, name=None, backend=None,
                             allocator=None, timeout=None):
    """:func:`time_train_step` in a fresh Python process (under the CPU ``allocator``,
    'glibc' / 'tcmalloc' / 'jemalloc'; None: this process's environment). A child that
    dies (killed for memory, say) gives a row with ``error``."""
    from mmglobalmamba.engine.cpu_allocator import allocator_env
    kwargs = dict(what=what, shape=list(shape), batch_size=batch_size, with_cp=with_cp,
                  precision=precision, device=str(device), iters=iters, warmup=warmup,
                  name=name, backend=backend)
    env = allocator_env(allocator) if allocator else dict(os.environ)
    try:
        fields = run_in_child(f'{__name__}:time_train_step', kwargs, env, timeout)
    except ChildFailed as err:
        return TrainStepResult(name=name or row_name(what), shape=tuple(shape),
                               batch_size=batch_size, with_cp=with_cp, precision=precision,
                               steps=iters, allocator=allocator or '', error=str(err))
    fields['shape'], fields['losses'] = tuple(fields['shape']), tuple(fields['losses'])
    return TrainStepResult(**fields)


def _fmt_mib(r):
    return f'{r.peak_mib:.0f}' + ('' if r.peak_exact else ' (>=)')


def format_train_table(results, markdown=False):
    """The rows of :func:`time_train_step` as one table."""
    header = ['model', 'input', 'batch', 'with_cp', 'precision', 'ms/step', 'best ms',
              'peak MiB', 'first / last loss']
    rows = []
    for r in results:
        row = [r.name, f'{r.shape[0]}x{r.shape[1]}', r.batch_size,
               'on' if r.with_cp else 'off', r.precision]
        if r.error:
            row += ['failed', '', '', r.error]
        else:
            row += [f'{r.ms_per_step:.0f}', f'{r.best_ms:.0f}', _fmt_mib(r),
                    f'{r.losses[0]:.4f} / {r.losses[-1]:.4f}']
        rows.append(row)
    return format_table(header, rows, markdown)


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


def step_time_ratios(results, name, baseline):
    """[(row of ``name``, row of ``baseline``, best-step time ratio)] for each pair of
    rows with the same input, batch, ``with_cp`` and precision (e.g. GlobalMamba's UperNet
    against Vim's)."""
    pairs = []
    for r in results:
        if r.error or r.name != name:
            continue
        base = _find(results, name=baseline, shape=r.shape, batch_size=r.batch_size,
                     with_cp=r.with_cp, precision=r.precision)
        if base is not None:
            pairs.append((r, base, r.best_ms / base.best_ms))
    return pairs
