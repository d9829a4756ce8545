"""``--benchmark``: PyTorch (our CPU kernel) against ONNX Runtime on the exported files.

Every entry (segmentor, backbone) is timed in interleaved rounds through
:mod:`mmglobalmamba.benchmark.measure` (medians, the median of per-round ratios), at the
exported shape and batch, with the same thread count for both. The report also carries
file size, node counts, export time and ORT's profile by op type. It measures; reading
the numbers against targets is left to the reader.
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from mmglobalmamba.benchmark.measure import (describe_machine, format_ratio, format_seconds,
                                             format_table, time_interleaved)
from .profile import profile_by_op_type
from .runtime import OnnxModel, import_onnxruntime

__all__ = ['BenchmarkReport', 'benchmark_exports']

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

    def profile_table(self, name, top=12, markdown=False):
        ops, run_ms = self.profiles[name]
        rows = [[op.op_type + (' (in Scan body)' if op.in_scan else ''),
                 f'{op.ms_per_run:.1f} ms', f'{100 * op.share:.1f}%',
                 f'{op.calls_per_run:.0f}'] for op in ops[:top]]
        title = f'ORT profile of {name}, {run_ms:.1f} ms per profiled run, by op type:\n'
        return title + format_table(['op type', 'time per run', 'share', 'calls per run'],
                                    rows, markdown=markdown)

    def describe(self, markdown=False):
        lines = [f'machine: {self.machine.describe()}', f'interleaved rounds: {self.rounds} '
                 '(medians; ratio = median of per-round ORT / PyTorch)', self.table(markdown)]
        for name in self.profiles:
            lines += ['', self.profile_table(name, markdown=markdown)]
        return '\n'.join(lines)


def benchmark_exports(entries, inputs, threads=2, rounds=5, warmup=1, profile_runs=2):
    """``entries``: [(name, PyTorch module, ExportResult)] all taking ``inputs``
    (batch, 3, H, W). Returns a :class:`BenchmarkReport`."""
    ort = import_onnxruntime()
    torch.set_num_threads(threads)
    machine = describe_machine('cpu')
    machine.extra['onnxruntime'] = f'{ort.__version__}, {threads} intra-op threads'
    x = inputs.float().contiguous()
    x_np = np.ascontiguousarray(x.numpy())
    fns = {}
    for name, module, result in entries:
        session = OnnxModel(result.path, threads=threads)

        def run_torch(module=module):
            with torch.no_grad():
                module(x)

        fns[f'{name}/pytorch'] = run_torch
        fns[f'{name}/ort'] = lambda session=session: session.run(x_np)
    timings = time_interleaved(fns, 'cpu', rounds=rounds, warmup=warmup)
    rows, profiles = [], {}
    for name, module, result in entries:
        torch_s, ort_s = timings.median(f'{name}/pytorch'), timings.median(f'{name}/ort')
        rows.append([name, 'x'.join(map(str, result.input_shape)), format_seconds(torch_s),
                     format_seconds(ort_s), format_ratio(timings.ratio(f'{name}/ort',
                                                                       f'{name}/pytorch')),
                     format_seconds(result.seconds), f'{result.bytes / 2 ** 20:.1f} MiB',
                     f'{result.nodes} / {result.nodes_total}'])
    for name, _, result in entries:
        profiles[name] = profile_by_op_type(result.path, x_np, threads, runs=profile_runs)
    machine.finish()
    return BenchmarkReport(rows, profiles, machine, rounds, extra=dict(timings=timings))
