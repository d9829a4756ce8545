"""Timing and memory benchmarks: the measurement layer (:mod:`.measure`), measurements in
fresh processes (:mod:`.child`) and the benchmarks built on them."""
from .measure import (Machine, PeakMemory, Timings, describe_machine, format_ratio,
                      format_seconds, format_table, row_name, sync, time_interleaved)

__all__ = [
    'Machine', 'PeakMemory', 'Timings', 'describe_machine', 'format_ratio', 'format_seconds',
    'format_table', 'row_name', 'sync', 'time_interleaved'
]
