"""``--benchmark``: PyTorch (our CPU kernel) against ONNX Runtime on the exported files.

Every entry (segmentor, backbone) is timed in interleaved rounds through
:mod:`mmglobalmamba.benchmark.measure` (medians, the median of per-round ratios), at the
exported shape and batch, with the same thread count for both. ORT runs in its own
torch-free process (:mod:`.ort_child` ``serve``, one line per run over a pipe): in one
process the two runtimes' thread pools and heap reuse got in each other's way (PyTorch
measured 0.19 s alone, 2.6 s interleaved with ORT in-process). The report also carries
file size, node counts, export time and ORT's profile by op type. It measures; reading
the numbers against targets is left to the reader.
"""
import os.path as osp
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from mmglobalmamba.benchmark.measure import (describe_machine, format_ratio, format_seconds,
                                             format_table, time_interleaved)
from .profile import OpTime
from .runtime import import_onnxruntime
from .verify import CHILD

__all__ = ['BenchmarkReport', 'OrtProcess', 'benchmark_exports']

HEADER = ['model', 'input', 'PyTorch', 'ORT', 'ORT / PyTorch', 'export', 'file',
          'nodes (main / with Scan bodies)']


@dataclass
class BenchmarkReport:
    rows: list
    profiles: dict               # entry name -> (rows of OpTime, ms per profiled run)
    machine: object
    rounds: int
    extra: dict = field(default_factory=dict)

    def table(self, markdown=False):
        return format_table(HEADER, self.rows, markdown=markdown)

    def profile_table(self, name, top=10, markdown=False):
        """Top op types of the main graph, then of the Scan bodies (part of Scan's time)."""
        ops, run_ms = self.profiles[name]
        rows = []
        for in_scan in (False, True):
            picked = [op for op in ops if op.in_scan == in_scan][:top]
            rows += [[op.op_type + (' (in Scan bodies)' if in_scan else ''),
                      f'{op.ms_per_run:.1f} ms', f'{100 * op.share:.1f}%',
                      f'{op.calls_per_run:.0f}'] for op in picked]
        title = (f'ORT profile of {name}, {run_ms:.1f} ms per profiled run (the profiler '
                 'adds a cost per node), by op type:\n')
        return title + format_table(['op type', 'time per run', 'share', 'calls per run'],
                                    rows, markdown=markdown)

    def describe(self, markdown=False):
        lines = [f'machine: {self.machine.describe()}', f'interleaved rounds: {self.rounds} '
                 '(medians; ratio = median of per-round ORT / PyTorch)', self.table(markdown)]
        for name in self.profiles:
            lines += ['', self.profile_table(name, markdown=markdown)]
        return '\n'.join(lines)


class OrtProcess:
    """ONNX Runtime sessions of ``paths`` in a torch-free child; ``run(i)`` returns when
    file ``i`` has run once on ``inputs``."""

    def __init__(self, paths, inputs, threads):
        self._tmp = tempfile.TemporaryDirectory(prefix='mmglobalmamba_bench_')
        data = osp.join(self._tmp.name, 'inputs.npz')
        np.savez(data, inputs=inputs)
        cmd = [sys.executable, CHILD, 'serve', '--data', data, '--threads', str(threads)]
        for path in paths:
            cmd += ['--model', path]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self._expect('ready')

    def _ask(self, line):
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f'the ONNX Runtime process ended (exit {self.proc.wait()})')
        return answer.strip()

    def _expect(self, word):
        answer = self.proc.stdout.readline().strip()
        if answer != word:
            raise RuntimeError(f'the ONNX Runtime process said {answer!r}, not {word!r}')

    def run(self, index):
        if self._ask(f'run {index}') != 'done':
            raise RuntimeError('the ONNX Runtime process did not finish a run')

    def profile(self, index):
        import json
        report = json.loads(self._ask(f'profile {index}'))
        return [OpTime(**row) for row in report['rows']], report['run_ms']

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self._tmp.cleanup()


def benchmark_exports(entries, inputs, threads=2, rounds=5, warmup=3):
    """``entries``: [(name, PyTorch module, ExportResult)] all taking ``inputs``
    (batch, 3, H, W). Returns a :class:`BenchmarkReport`.

    Three warm-up rounds: PyTorch's first few forwards at a new size are several times
    slower (allocator growth; measured 3.1, 2.6, 0.9 s, then 0.19 s for the tiny backbone
    at 512x512), ORT's first run builds its kernels."""
    ort = import_onnxruntime()
    torch.set_num_threads(threads)
    machine = describe_machine('cpu')
    machine.extra['onnxruntime'] = f'{ort.__version__}, {threads} intra-op threads'
    x = inputs.float().contiguous()
    ort_process = OrtProcess([result.path for _, _, result in entries],
                             np.ascontiguousarray(x.numpy()), threads)
    fns = {}
    for index, (name, module, result) in enumerate(entries):

        def run_torch(module=module):
            with torch.no_grad():
                module(x)

        fns[f'{name}/pytorch'] = run_torch
        fns[f'{name}/ort'] = lambda index=index: ort_process.run(index)
    try:
        timings = time_interleaved(fns, 'cpu', rounds=rounds, warmup=warmup)
        profiles = {name: ort_process.profile(index)
                    for index, (name, _, _) in enumerate(entries)}
    finally:
        ort_process.close()
    rows = []
    for name, module, result in entries:
        torch_s, ort_s = timings.median(f'{name}/pytorch'), timings.median(f'{name}/ort')
        rows.append([name, 'x'.join(map(str, result.input_shape)), format_seconds(torch_s),
                     format_seconds(ort_s), format_ratio(timings.ratio(f'{name}/ort',
                                                                       f'{name}/pytorch')),
                     format_seconds(result.seconds), f'{result.bytes / 2 ** 20:.1f} MiB',
                     f'{result.nodes} / {result.nodes_total}'])
    machine.finish()
    return BenchmarkReport(rows, profiles, machine, rounds, extra=dict(timings=timings))
