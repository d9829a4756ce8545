"""Inference throughput (images/s) and peak memory of a backbone or a full model.

The library behind ``tools/benchmark_throughput.py``: one row per (model, input size, scan
backend, batch size), timed and measured through :mod:`.measure` (the peak covers warm-up
and timed calls, above the memory held before them: model and inputs already built).
"""
from dataclasses import dataclass

import torch

from .measure import PeakMemory, format_table, time_interleaved

__all__ = ['ThroughputResult', 'time_inference', 'build_inference', 'format_throughput']


@dataclass
class ThroughputResult:
    """One row: ``ms_per_batch`` the median call, ``best_ms`` the fastest call (robust
    when other processes share the CPU), ``images_per_s`` from the median."""
    name: str
    shape: tuple
    backend: str
    batch_size: int
    iters: int
    ms_per_batch: float
    best_ms: float
    images_per_s: float
    peak_mib: float
    peak_exact: bool


def build_inference(what, shape, batch_size, device='cpu'):
    """(module, input) for an inference row: ``what`` a backbone preset ('tiny', 'small')
    or an mmseg / mmdet config path (its 'tensor' mode: backbone, neck and heads)."""
    from mmglobalmamba.engine.config import build_backbone, build_model_from_config
    from mmglobalmamba.engine.synthetic_batch import TensorForward
    if what.endswith('.py'):
        model, task = build_model_from_config(what)
        module = TensorForward(model, task, shape, batch_size)
    else:
        module = build_backbone(what)
    x = torch.randn(batch_size, 3, *shape)                                # (B, 3, H, W)
    return module.to(device).eval(), x.to(device)


def time_inference(module, x, name, backend, iters=5, warmup=1, device='cpu'):
    """Time ``module(x)`` (eval, no grad) under ``scan_backend(backend)``: ``warmup``
    untimed and ``iters`` timed calls."""
    from mmglobalmamba.ops import scan_backend

    def call():
        with torch.no_grad():
            module(x)

    with scan_backend(backend), PeakMemory(device) as mem:
        timings = time_interleaved({name: call}, device, rounds=iters, warmup=warmup)
    median = timings.median(name)
    return ThroughputResult(
        name=name, shape=tuple(x.shape[-2:]), backend=backend, batch_size=x.shape[0],
        iters=iters, ms_per_batch=1000 * median, best_ms=1000 * timings.best(name),
        images_per_s=x.shape[0] / median, peak_mib=mem.peak_mib, peak_exact=mem.exact)


def format_throughput(results, markdown=False):
    """The rows of :func:`time_inference` as one table."""
    header = ['model', 'input', 'backend', 'batch', 'images/s', 'median ms', 'best ms',
              'peak MiB']
    rows = [[r.name, f'{r.shape[0]}x{r.shape[1]}', r.backend, r.batch_size,
             f'{r.images_per_s:.2f}', f'{r.ms_per_batch:.0f}', f'{r.best_ms:.0f}',
             f'{r.peak_mib:.0f}' + ('' if r.peak_exact else ' (>=)')] for r in results]
    return format_table(header, rows, markdown)
