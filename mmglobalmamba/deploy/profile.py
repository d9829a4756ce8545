"""Where ONNX Runtime spends a run: its profiler's node events summed by op type.

Nodes inside Scan bodies are reported apart (``in_scan``): their time is part of the Scan
node's own time, so the two groups must not be added. Needs onnxruntime and numpy only.
"""
import json
import os
from collections import defaultdict
from dataclasses import dataclass

__all__ = ['OpTime', 'profile_by_op_type']


@dataclass
class OpTime:
    op_type: str
    in_scan: bool        # a node of a Scan body (its time is inside the Scan's)
    ms_per_run: float
    calls_per_run: float
    share: float         # of the whole run (model_run event)


def profile_by_op_type(path, inputs, threads=None, runs=2):
    """Profile ``runs`` runs of the file at ``inputs`` (one untimed warm-up first).
    Returns (rows sorted by time, top level first; ms per run of the whole model)."""
    from .runtime import OnnxModel
    model = OnnxModel(path, threads=threads, profile=True)
    model.run(inputs)
    for _ in range(runs):
        model.run(inputs)
    trace = model.end_profiling()
    try:
        with open(trace) as f:
            events = json.load(f)
    finally:
        os.remove(trace)
    total = defaultdict(float)
    calls = defaultdict(int)
    run_times = []
    for event in events:
        if event.get('cat') == 'Session' and event.get('name') == 'model_run':
            run_times.append(event['dur'])
        if event.get('cat') != 'Node' or not event['name'].endswith('_kernel_time'):
            continue
        key = (event['args']['op_name'], '/body/' in event['name'])
        total[key] += event['dur']
        calls[key] += 1
    timed = run_times[1:] or run_times                 # drop the warm-up run
    per_run_us = sum(timed) / len(timed)
    n_runs = len(run_times)
    rows = [OpTime(op, in_scan, total[(op, in_scan)] / n_runs / 1e3,
                   calls[(op, in_scan)] / n_runs, total[(op, in_scan)] / n_runs / per_run_us)
            for op, in_scan in total]
    rows.sort(key=lambda r: (r.in_scan, -r.ms_per_run))
    return rows, per_run_us / 1e3
