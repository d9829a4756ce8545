"""Throughput (images/s) and peak memory of one model configuration.

Peak memory is the most the process holds *above* what it held just before the timed
loop (model and inputs already built):

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (allocator
  memory, not the cached pool).
* CPU: the resident-set high-water mark (``VmHWM``), reset through
  ``/proc/self/clear_refs`` (Linux >= 4.0) before the loop, after the allocator has
  handed memory freed by earlier runs back to the system (``malloc_trim``, or tcmalloc's /
  jemalloc's own call; else it would reuse that memory unseen). Where that reset is refused,
  ``ru_maxrss`` is used, which cannot drop below an earlier peak: the value is then a
  lower bound and reported with ``exact=False``. (``tracemalloc`` does not see torch's
  allocations, so it is not used.)
"""
import re
import resource
import time
from dataclasses import dataclass

import torch

__all__ = ['BenchResult', 'PeakMemory', 'benchmark', 'describe_machine']

_MiB = 1024 * 1024


def _status_kib(field):
    try:
        with open('/proc/self/status') as f:
            match = re.search(rf'{field}:\s+(\d+)\s+kB', f.read())
        return int(match.group(1)) if match else None
    except OSError:
        return None


class PeakMemory:
    """Context manager: ``peak_mib`` = peak memory above the level at entry."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_mib = None
        self.exact = True

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        from mmglobalmamba.engine.cpu_allocator import release_free_memory
        release_free_memory()  # memory freed by earlier runs: back to the system
        self._base = (_status_kib('VmRSS') or 0) * 1024
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the peak RSS to the current RSS
            self._hwm = True
        except OSError:
            self._hwm = False
            self.exact = False
            self._maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._hwm and _status_kib('VmHWM') is not None:
            peak = _status_kib('VmHWM') * 1024
        else:
            peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                       self._maxrss0)
        self.peak_mib = max(0, peak - self._base) / _MiB
        return False


@dataclass
class BenchResult:
    """One benchmark row: ``images_per_s`` and ``ms_per_batch`` over all timed calls,
    ``best_ms`` the fastest call (robust when other processes share the CPU)."""
    name: str
    shape: tuple
    backend: str
    batch_size: int
    mode: str
    iters: int
    seconds: float
    images_per_s: float
    ms_per_batch: float
    best_ms: float
    peak_mib: float
    peak_exact: bool


def describe_machine(device):
    """'NVIDIA H200' or 'CPU x86_64, 2 threads', the torch version and the load average:
    the line every benchmark table is printed under."""
    import os
    import platform
    device = torch.device(device)
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda' else
             f'CPU {platform.processor() or platform.machine()}, '
             f'{torch.get_num_threads()} threads')
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    return f'{where}, torch {torch.__version__}; load average {load:.1f} at the end'


def _sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def _reduce(out):
    """A scalar from whatever the model returns, to call backward on."""
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        parts = [_reduce(o) for o in out]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None
    return None


def benchmark(module, make_inputs, name, shape, backend, batch_size, mode='infer',
              iters=5, warmup=1, device='cpu', progress=None):
    """Time ``module(*make_inputs())`` under ``scan_backend(backend)``.

    Args:
        module (nn.Module): the model (already on ``device``).
        make_inputs (callable): returns the positional inputs for one call.
        mode (str): 'infer' (eval, no grad) or 'train' (train mode, forward + backward of
            the mean of all outputs).
        iters, warmup (int): timed and untimed calls; memory covers both.
        progress (tqdm | None): advanced by one per call.
    """
    from mmglobalmamba.ops import scan_backend
    if mode not in ('infer', 'train'):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    module.train(mode == 'train')
    inputs = make_inputs()

    def step():
        if mode == 'infer':
            with torch.no_grad():
                module(*inputs)
        else:
            loss = _reduce(module(*inputs))
            loss.backward()
            module.zero_grad(set_to_none=True)
        if progress is not None:
            progress.update(1)

    with scan_backend(backend), PeakMemory(device) as mem:
        for _ in range(warmup):
            step()
        _sync(device)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
        seconds = sum(times)
    return BenchResult(name=name, shape=tuple(shape), backend=backend,
                       batch_size=batch_size, mode=mode, iters=iters, seconds=seconds,
                       images_per_s=batch_size * iters / seconds,
                       ms_per_batch=1000 * seconds / iters, best_ms=1000 * min(times),
                       peak_mib=mem.peak_mib,
                       peak_exact=mem.exact)
