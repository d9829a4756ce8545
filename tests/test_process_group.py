"""release_process_group joins gloo's worker threads before the interpreter shuts down.

Left running, a worker that drops a finished collective during shutdown aborts the rank
("terminate called without an active exception"); see mmglobalmamba/engine/process_group.py.
The check counts the OS threads of a one-rank gloo process in a fresh interpreter (two of
them, started together by conftest's ``fresh_python``).
"""
import os
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_proc = pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason='counts threads in /proc')

SCRIPT = textwrap.dedent("""
    import os, socket, sys
    import torch, torch.distributed as dist
    from mmglobalmamba.engine.process_group import release_process_group

    def threads():
        return len(os.listdir('/proc/self/task'))

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    torch.set_num_threads(1)
    before = threads()
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    model(torch.randn(3, 4)).sum().backward()  # gradient all-reduce through the DDP reducer
    t = torch.ones(5)
    dist.all_reduce(t)
    holder = {'model': model}
    holder['self'] = holder  # like a runner: freed by the garbage collector, not refcounts
    del model
    if sys.argv[1] == 'keep':
        keep = holder  # the DDP wrapper still alive: the group cannot go
    del holder
    running = threads()
    release_process_group()
    print(before, running, threads(), dist.is_initialized())
""")


FRESH_PYTHON = {mode: dict(args=['-c', SCRIPT, mode], cwd=ROOT,
                           env=dict(os.environ, OMP_NUM_THREADS='1'))
                for mode in ('drop', 'keep')}


def run_script(fresh_python, mode):
    proc = fresh_python(mode, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, running, after, initialized = proc.stdout.split()[-4:]
    return int(before), int(running), int(after), initialized


@needs_proc
def test_release_joins_gloo_threads(fresh_python):
    before, running, after, initialized = run_script(fresh_python, 'drop')
    assert running > before  # gloo's workers and transport loop
    assert after == before, f'{running - after} of {running - before} gloo threads joined'
    assert initialized == 'False'


@needs_proc
def test_a_live_ddp_wrapper_keeps_the_threads(fresh_python):
    """Why tools/train.py drops its runner first: destroying the group is not enough."""
    before, running, after, _ = run_script(fresh_python, 'keep')
    assert after == running > before


def test_no_group_is_a_no_op():
    import torch.distributed as dist
    from mmglobalmamba.engine.process_group import release_process_group
    assert not dist.is_initialized()
    assert release_process_group() is None  # nothing to release: returns, creates no group
    assert not dist.is_initialized()
