"""The measurement layer (mmglobalmamba.benchmark.measure, .child): what it computes from
the times it takes, checked on a fake clock, never how fast anything is."""
import pytest
import torch

from mmglobalmamba.benchmark import measure
from mmglobalmamba.benchmark.child import ChildFailed, run_in_child


class FakeClock:
    """perf_counter stand-in: time moves only when an entry 'works'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def work(self, seconds):
        self.now += seconds


def test_time_interleaved_rounds_order_and_ratios(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(measure.time, 'perf_counter', clock)
    calls, cost = [], {'a': [9, 3, 30, 6], 'b': [9, 1, 5, 4]}  # per call, warm-up first

    def entry(name):
        def run():
            calls.append(name)
            clock.work(cost[name][sum(c == name for c in calls) - 1])
        return run

    t = measure.time_interleaved({'a': entry('a'), 'b': entry('b')}, rounds=3, warmup=1)
    assert calls == ['a', 'b'] * 4                      # one warm-up round, three timed
    assert t.times == {'a': [3, 30, 6], 'b': [1, 5, 4]}  # warm-up not timed
    assert t.median('a') == 6 and t.best('b') == 1
    assert t.ratios('a', 'b') == [3, 6, 1.5]
    assert t.ratio('a', 'b') == 3     # median of per-round ratios, not 6 / 4 of the medians
    with pytest.raises(ValueError, match='rounds'):
        measure.time_interleaved({'a': entry('a')}, rounds=0)


def test_format_table_text_and_markdown():
    rows = [('cpu', 1.0), ('torch', '12.0 ms')]
    text = measure.format_table(('name', 'time'), rows).splitlines()
    assert text == [' name     time', '-----  -------', '  cpu      1.0', 'torch  12.0 ms']
    md = measure.format_table(('name', 'time'), rows, markdown=True).splitlines()
    assert md == ['| name | time |', '|---|---|', '| cpu | 1.0 |', '| torch | 12.0 ms |']
    assert measure.format_seconds(0.0123) == '12.3 ms'
    assert measure.format_seconds(2.5, '*') == '2.50 s*'
    assert measure.format_seconds(None) == 'n/a'
    assert measure.format_ratio(1.456) == '1.46x' and measure.format_ratio(None) == 'n/a'


def test_row_name_and_spec():
    assert measure.row_name('configs/upernet_globalmamba_ade20k.py') == \
        'upernet_globalmamba_ade20k'
    assert measure.row_name('tiny') == 'GlobalMamba-tiny'
    assert measure.row_name('vit-sdpa') == 'vit-sdpa'
    assert measure.row_name(dict(embed_dims=32, depth=2)) == 'GlobalMamba(embed_dims=32, depth=2)'
    assert measure.split_spec('tiny@800x1344', [(512, 512)]) == ('tiny', [(800, 1344)])
    assert measure.split_spec('a.py', [(1, 2), (3, 4)]) == ('a.py', [(1, 2), (3, 4)])
    with pytest.raises(ValueError, match='NAME@HxW'):
        measure.split_spec('tiny@800', [])


def test_machine_names_cpu_isa_and_load():
    machine = measure.describe_machine('cpu')
    with open('/proc/cpuinfo') as f:
        info = f.read()
    assert machine.cpu in info                                     # the model name line
    flag = {'AVX-512': 'avx512f', 'AVX2+FMA': 'avx2', 'AVX2': 'avx2'}.get(machine.isa)
    assert flag is None or f' {flag}' in info
    assert machine.threads == torch.get_num_threads()
    line = machine.finish().describe()
    assert machine.cpu in line and machine.isa in line and 'at start' in line
    assert 'at end' in line and torch.__version__ in line


def test_peak_memory_sees_a_large_allocation():
    with measure.PeakMemory('cpu') as mem:
        x = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        del x
    if not mem.exact:
        pytest.skip('no /proc/self/clear_refs here: the peak RSS cannot be reset')
    assert 60 <= mem.peak_mib < 1024
    with measure.PeakMemory('cpu') as idle:
        pass
    assert idle.peak_mib < 60  # the first peak does not leak into the next measurement


def test_child_failure_carries_the_last_line(monkeypatch):
    """(A child that returns: test_cpu_allocator's train-step row; one that fails for real:
    test_benchmark's and test_resolution_benchmark's error rows.)"""
    import subprocess

    from mmglobalmamba.benchmark import child
    done = subprocess.CompletedProcess([], 1, stdout='noise\n',
                                       stderr='Traceback ...\nValueError: bad size\n')
    monkeypatch.setattr(child.subprocess, 'run', lambda *a, **k: done)
    with pytest.raises(ChildFailed, match='child exited with 1: ValueError: bad size$'):
        run_in_child('m:f', {})


def test_child_past_its_timeout_is_a_failure(monkeypatch):
    """A child killed at its timeout raises ChildFailed (a row with an error for the
    train-step and resolution benchmarks), not subprocess.TimeoutExpired."""
    import subprocess

    from mmglobalmamba.benchmark import child

    def run(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs['timeout'])
    monkeypatch.setattr(child.subprocess, 'run', run)
    with pytest.raises(ChildFailed, match=r'child timed out after 5 s \(killed\)'):
        run_in_child('m:f', {}, timeout=5)
