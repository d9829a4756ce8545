"""Backend choice in mmglobalmamba.ops (argument, context manager, environment variable,
default), the errors and the warning when a kernel package is missing, and the report.
That importing the package loads no CUDA package: tests/test_registration.py (a fresh
process). Results of each backend: tests/test_ops.py."""
import sys
import warnings

import pytest
import torch

from loop_reference import loop_selective_scan
from mmglobalmamba import ops
from mmglobalmamba.ops import dispatch
from test_ops import HAS_CUDA, assert_rel_close, make_scan_inputs


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Forget cached kernel imports before and after the test (which may fake them)."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.reset_cache()
    yield monkeypatch
    dispatch.reset_cache()


def _default_cpu_backend():
    return 'cpu' if dispatch.cpu_kernel() is not None else 'torch'


def test_default_backend_for_cpu_tensors(fresh_dispatch):
    assert ops.resolve_backend(None, 'cpu') == _default_cpu_backend()
    assert ops.available_backends()[-1] == 'torch'


def test_forcing_cuda_without_it_is_a_clear_error(fresh_dispatch):
    if HAS_CUDA and 'cuda' in ops.available_backends():
        pytest.skip('CUDA kernels are available here')
    kw = make_scan_inputs(1, 2, 3, 2)
    with pytest.raises(ops.BackendUnavailableError, match='pip install --no-build-isolation'):
        ops.selective_scan(**kw, backend='cuda')
    with pytest.raises(ops.BackendUnavailableError, match='causal-conv1d'):
        ops.causal_conv1d(kw['u'], torch.randn(2, 4), backend='cuda')


def test_forcing_cpu_without_kernel_is_a_clear_error(fresh_dispatch):
    fresh_dispatch.setitem(sys.modules, 'mmglobalmamba._C', None)  # import now fails
    kw = make_scan_inputs(1, 2, 3, 2)
    with pytest.raises(ops.BackendUnavailableError,
                       match=r'pip install -e \. --no-build-isolation'):
        ops.selective_scan(**kw, backend='cpu')
    assert 'cpu' not in ops.available_backends()


def test_missing_kernel_warns_once_and_falls_back(fresh_dispatch):
    fresh_dispatch.setitem(sys.modules, 'mmglobalmamba._C', None)
    kw = make_scan_inputs(2, 3, 6, 2)
    with pytest.warns(ops.CPUKernelNotBuiltWarning, match='not built') as record:
        out = ops.selective_scan(**kw)
    assert len([w for w in record if issubclass(w.category, ops.CPUKernelNotBuiltWarning)]) == 1
    assert '\n' not in str(record[0].message)
    assert_rel_close(out, loop_selective_scan(**kw), 1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter('error', ops.CPUKernelNotBuiltWarning)
        ops.selective_scan(**kw)  # second call: silent


def test_env_var_and_context_manager(fresh_dispatch):
    fresh_dispatch.setenv(dispatch.ENV_VAR, 'torch')
    assert ops.resolve_backend(None, 'cpu') == 'torch'
    fresh_dispatch.setenv(dispatch.ENV_VAR, 'nonsense')
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        ops.resolve_backend(None, 'cpu')
    fresh_dispatch.setenv(dispatch.ENV_VAR, 'auto')
    with ops.scan_backend('torch'):
        assert ops.resolve_backend(None, 'cpu') == 'torch'
        with ops.scan_backend('auto'):  # the inner context beats the outer 'torch'
            assert ops.resolve_backend(None, 'cpu') == _default_cpu_backend()
        # An explicit argument beats the context.
        if 'cpu' in ops.available_backends():
            assert ops.resolve_backend('cpu', 'cpu') == 'cpu'
    with pytest.raises(ValueError, match='unknown scan backend'):
        with ops.scan_backend('fast'):
            pass


def test_why_unavailable_and_report(fresh_dispatch):
    fresh_dispatch.setitem(sys.modules, 'mmglobalmamba._C', None)  # import now fails
    assert 'mmglobalmamba._C' in dispatch.why_unavailable('cpu')
    assert any(line.startswith('cpu: NOT available') for line in dispatch.backend_report())
    with pytest.raises(ValueError, match='unknown kernel package'):
        dispatch.why_unavailable('nonsense')
