import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference_globalmamba.py


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end tests (still part of make test)')


@pytest.fixture(scope='module')
def fresh_python(request):
    """The checks that need a fresh interpreter, all started together on first use: the test
    module's ``FRESH_PYTHON`` maps a name to the arguments after ``python`` (or to a dict of
    ``args`` and ``subprocess.Popen`` keywords: ``env``, ``cwd``). Starting them at once lets
    a 2-core machine import torch in two of them at a time. Returns
    ``result(name) -> subprocess.CompletedProcess`` (text stdout and stderr)."""
    procs = {}
    for name, spec in request.module.FRESH_PYTHON.items():
        spec = spec if isinstance(spec, dict) else dict(args=spec)
        kw = {k: v for k, v in spec.items() if k != 'args'}
        procs[name] = subprocess.Popen([sys.executable, *spec['args']], text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    done = {}

    def result(name, timeout=300):
        if name not in done:
            proc = procs[name]
            out, err = proc.communicate(timeout=timeout)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return done[name]

    yield result
    for name, proc in procs.items():
        if name not in done:  # a test that failed before reading it, or was deselected
            proc.kill()
            proc.communicate()
