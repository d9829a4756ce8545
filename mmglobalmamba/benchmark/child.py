"""One measurement in a fresh Python process.

A row measured in its own process owes nothing to what earlier rows left behind: heap
pages glibc keeps, a warm allocator cache, modules imported, threads started. The parent
names a function by ``'module:function'`` and its keyword arguments (JSON); the child,
``python -m mmglobalmamba.benchmark.child``, calls it and prints the result (a dict or a
dataclass) as one tagged JSON line, which :func:`run_in_child` reads back.
"""
import dataclasses
import importlib
import json
import os
import os.path as osp
import subprocess
import sys

__all__ = ['ChildFailed', 'run_in_child']

_TAG = 'MMGLOBALMAMBA_CHILD_RESULT '
_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class ChildFailed(RuntimeError):
    """The child process exited without a result (an exception, or killed for memory)."""


def run_in_child(target, kwargs, env=None, timeout=None):
    """``target(**kwargs)`` (``target`` = 'package.module:function') in a fresh process
    with environment ``env`` (default: this one's). Returns the child's result as a dict;
    raises :class:`ChildFailed` with the exit status and the last line of its stderr, or
    when the child runs past ``timeout`` seconds (it is killed)."""
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (_ROOT, env.get('PYTHONPATH')) if p)
    try:
        proc = subprocess.run([sys.executable, '-m', __name__, target, json.dumps(kwargs)],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f'child timed out after {timeout} s (killed)') from None
    for line in proc.stdout.splitlines():
        if line.startswith(_TAG):
            return json.loads(line[len(_TAG):])
    tail = (proc.stderr.strip().splitlines() or [''])[-1][:200]
    raise ChildFailed(f'child exited with {proc.returncode}: {tail}')


def _main(argv):
    import warnings
    warnings.filterwarnings('ignore')
    module, name = argv[0].split(':')
    result = getattr(importlib.import_module(module), name)(**json.loads(argv[1]))
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    print(_TAG + json.dumps(result), flush=True)


if __name__ == '__main__':
    _main(sys.argv[1:])
