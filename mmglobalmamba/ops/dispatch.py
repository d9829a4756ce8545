"""The one place that decides which implementation runs a scan op.

Backends:
    ``'cuda'``  mamba_ssm / causal_conv1d CUDA kernels (CUDA tensors, packages importable).
    ``'cpu'``   our compiled kernel ``mmglobalmamba._C`` (CPU tensors, extension built).
    ``'torch'`` the plain PyTorch reference (any device, always there, slow).

Choice, first match wins: the ``backend=`` argument of an op, then the innermost
``scan_backend(name)`` context, then the environment variable
``MMGLOBALMAMBA_SCAN_BACKEND``, then the best backend for the tensors' device.
A forced backend that is not available raises :class:`BackendUnavailableError` saying
how to install or build it. Optional packages are imported lazily, once, on first use
(one cached loader); :func:`why_unavailable` and :func:`backend_report` say why one is
missing, :func:`reset_cache` forgets the cached imports.
"""
import contextlib
import importlib
import importlib.util
import os
import sys
import threading
import types
import warnings

import torch

__all__ = [
    'BACKENDS', 'ENV_VAR', 'BackendUnavailableError', 'CPUKernelNotBuiltWarning',
    'available_backends', 'scan_backend', 'resolve_backend', 'requested_backend',
    'cpu_kernel', 'mamba_ssm_interface', 'causal_conv1d_interface', 'why_unavailable',
    'backend_report', 'reset_cache', 'scan_substitute', 'active_scan_substitute'
]

BACKENDS = ('cuda', 'cpu', 'torch')
ENV_VAR = 'MMGLOBALMAMBA_SCAN_BACKEND'
_AUTO = (None, '', 'auto')

CUDA_INSTALL_HINT = ('install the CUDA kernels into an environment with a CUDA build of '
                     'torch: `pip install --no-build-isolation mamba-ssm causal-conv1d` '
                     '(or `pip install --no-build-isolation -e .[cuda]`)')
CPU_BUILD_HINT = ('build it by reinstalling mmglobalmamba from its source tree with '
                  '`pip install -e . --no-build-isolation` (or `python setup.py build_ext '
                  '--inplace`); a C++17 compiler with OpenMP is needed')


class BackendUnavailableError(RuntimeError):
    """A forced scan backend cannot run here; the message says how to get it."""


class CPUKernelNotBuiltWarning(UserWarning):
    """The compiled CPU kernel is missing; the slow PyTorch scan is used instead."""


_UNSET = object()
_cache = {}      # package name -> module, or None when it cannot be loaded
_errors = {}     # package name -> why it cannot be loaded
_warned_no_cpu_kernel = False
_lock = threading.Lock()
_local = threading.local()


# --------------------------------------------------------------------------------------
# Lazy, cached imports of the optional kernels


# What the Python side calls in mmglobalmamba._C; a build without one of them is stale.
_CPU_KERNEL_FUNCTIONS = ('scan_fwd', 'scan_bwd', 'conv_fwd', 'conv_bwd')


def _load(key, importer, needs_cuda=False):
    """``importer()``'s module, imported once (thread-safe) and cached; None, with the
    reason kept for :func:`why_unavailable`, when it fails."""
    if _cache.get(key, _UNSET) is _UNSET:
        with _lock:
            if _cache.get(key, _UNSET) is _UNSET:
                module = None
                if needs_cuda and not torch.cuda.is_available():
                    _errors[key] = 'CUDA is not available to torch'
                else:
                    try:
                        module = importer()
                    except Exception as err:  # ImportError, or a CUDA / ABI load failure
                        _errors[key] = f'{type(err).__name__}: {err}'
                _cache[key] = module
    return _cache[key]


def _import_cpu_kernel():
    module = importlib.import_module('mmglobalmamba._C')
    missing = [f for f in _CPU_KERNEL_FUNCTIONS if not hasattr(module, f)]
    if missing:
        raise ImportError(f'mmglobalmamba._C has no {", ".join(missing)} '
                          f'(built from older sources?)')
    return module


def _import_mamba_ssm_ops():
    """Import ``mamba_ssm.ops.selective_scan_interface``.

    ``mamba_ssm/__init__.py`` also imports its language-model code (transformers, triton),
    which the scan does not need. If only that part fails, the ops module is loaded under
    a temporary bare package object so that the missing extras do not hide the kernels.
    """
    try:
        return importlib.import_module('mamba_ssm.ops.selective_scan_interface')
    except ImportError as first:
        missing = getattr(first, 'name', None) or ''
        if missing.split('.')[0] in ('mamba_ssm', 'selective_scan_cuda', 'torch'):
            raise
        spec = importlib.util.find_spec('mamba_ssm')
        if spec is None or not spec.submodule_search_locations:
            raise
        stub = types.ModuleType('mamba_ssm')
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules['mamba_ssm'] = stub
        try:
            return importlib.import_module('mamba_ssm.ops.selective_scan_interface')
        except ImportError:
            raise first
        finally:
            # A later `import mamba_ssm` should run the real __init__ (and fail honestly).
            if sys.modules.get('mamba_ssm') is stub:
                del sys.modules['mamba_ssm']


def _import_causal_conv1d():
    module = importlib.import_module('causal_conv1d')
    module.causal_conv1d_fn  # noqa: B018 - fail here if it is absent
    return module


def cpu_kernel():
    """The compiled module ``mmglobalmamba._C`` or None when it is not built."""
    return _load('cpu', _import_cpu_kernel)


def mamba_ssm_interface():
    """mamba_ssm's ``selective_scan_interface`` module, or None (needs CUDA)."""
    return _load('mamba_ssm', _import_mamba_ssm_ops, needs_cuda=True)


def causal_conv1d_interface():
    """The ``causal_conv1d`` package (with ``causal_conv1d_fn``), or None (needs CUDA)."""
    return _load('causal_conv1d', _import_causal_conv1d, needs_cuda=True)


def why_unavailable(name):
    """Why the kernel package ``name`` (``'cpu'``, ``'mamba_ssm'``, ``'causal_conv1d'``)
    cannot be loaded, or None when it loads (tries the import if not done yet)."""
    loader = {'cpu': cpu_kernel, **_LOADERS}.get(name)
    if loader is None:
        raise ValueError(f"unknown kernel package {name!r}; choose 'cpu', 'mamba_ssm' or "
                         f"'causal_conv1d'")
    return None if loader() is not None else _errors.get(name, 'import failed')


def backend_report():
    """One line per kernel package: where it was loaded from, or why it is not there."""
    lines = []
    for name in ('cpu', 'mamba_ssm', 'causal_conv1d'):
        why = why_unavailable(name)
        module = _cache.get(name)
        lines.append(f'{name}: NOT available ({why})' if why else
                     f'{name}: {getattr(module, "__file__", module)}')
    return lines


def reset_cache():
    """Forget the cached kernel imports and the warned-once flag, so that the next op call
    imports again (after building the kernel in a running process, or in tests that fake
    a missing kernel)."""
    global _warned_no_cpu_kernel
    with _lock:
        _cache.clear()
        _errors.clear()
        _warned_no_cpu_kernel = False


# What each op needs for the 'cuda' backend.
_CUDA_NEEDS = {
    'selective_scan': ('mamba_ssm', ),
    'causal_conv1d': ('causal_conv1d', ),
    'mamba_inner': ('mamba_ssm', 'causal_conv1d'),
}
_LOADERS = {'mamba_ssm': mamba_ssm_interface, 'causal_conv1d': causal_conv1d_interface}


def _is_available(name, op='selective_scan'):
    if name == 'torch':
        return True
    if name == 'cpu':
        return cpu_kernel() is not None
    if name == 'cuda':
        return all(_LOADERS[pkg]() is not None for pkg in _CUDA_NEEDS[op])
    raise ValueError(f'unknown scan backend {name!r}; choose one of {BACKENDS}')


def available_backends(op='selective_scan'):
    """Names of the backends that can run ``op`` here, best first."""
    return [name for name in BACKENDS if _is_available(name, op)]


def _unavailable_message(name, op):
    if name == 'cpu':
        return (f"scan backend 'cpu' is not available: the CPU kernel mmglobalmamba._C is "
                f"not built ({why_unavailable('cpu')}); {CPU_BUILD_HINT}")
    why = '; '.join(f'{pkg}: {why_unavailable(pkg)}' for pkg in _CUDA_NEEDS[op]
                    if why_unavailable(pkg))
    return f"scan backend 'cuda' is not available for {op} ({why}); {CUDA_INSTALL_HINT}"


# --------------------------------------------------------------------------------------
# Selection


@contextlib.contextmanager
def scan_backend(name):
    """Force a backend (``'cuda'``, ``'cpu'``, ``'torch'``; ``None``/``'auto'``: automatic)
    for the ops called inside the ``with`` block on this thread."""
    if name not in _AUTO and name not in BACKENDS:
        raise ValueError(f'unknown scan backend {name!r}; choose one of {BACKENDS} or "auto"')
    stack = getattr(_local, 'stack', None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


@contextlib.contextmanager
def scan_substitute(fn):
    """Inside the ``with`` block (this thread) every ``selective_scan`` call runs
    ``fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)`` instead of a backend, and
    ``mamba_inner`` takes its composed (batch, dim, L) route so that each mixer's scan
    reaches ``fn``. The hook for tools that must see the scan as one op of their own: FLOP
    counting (a traced custom op) and ONNX export (a Scan graph). ``fn`` itself runs with
    the substitute lifted, so it may call ``selective_scan``; ``None`` lifts it."""
    previous = getattr(_local, 'substitute', None)
    _local.substitute = fn
    try:
        yield
    finally:
        _local.substitute = previous


def active_scan_substitute():
    """The function set by the innermost :func:`scan_substitute` on this thread, or None."""
    return getattr(_local, 'substitute', None)


def requested_backend():
    """The backend forced by a ``scan_backend`` context or the environment, else None."""
    stack = getattr(_local, 'stack', None)
    if stack:
        return None if stack[-1] in _AUTO else stack[-1]
    env = os.environ.get(ENV_VAR, '').strip().lower()
    if env in _AUTO:
        return None
    if env not in BACKENDS:
        raise ValueError(f'{ENV_VAR}={env!r} is not a scan backend; choose one of '
                         f'{BACKENDS} or "auto"')
    return env


def _warn_no_cpu_kernel():
    global _warned_no_cpu_kernel
    if _warned_no_cpu_kernel:
        return
    _warned_no_cpu_kernel = True
    warnings.warn(
        'mmglobalmamba: the CPU selective-scan kernel (mmglobalmamba._C) is not built, so '
        'the slow PyTorch scan is used; build it with `pip install -e . '
        '--no-build-isolation` from the source tree', CPUKernelNotBuiltWarning, stacklevel=4)


def resolve_backend(backend=None, device=None, op='selective_scan'):
    """Pick the backend for ``op`` on tensors living on ``device``.

    ``backend`` (argument) > ``scan_backend`` context > ``$MMGLOBALMAMBA_SCAN_BACKEND`` >
    automatic. Raises :class:`BackendUnavailableError` for a forced backend that cannot run.
    """
    device = torch.device(device) if device is not None else torch.device('cpu')
    name = backend if backend not in _AUTO else requested_backend()
    if name in _AUTO:
        if device.type == 'cuda' and _is_available('cuda', op):
            return 'cuda'
        if device.type == 'cpu':
            if _is_available('cpu', op):
                return 'cpu'
            _warn_no_cpu_kernel()
        return 'torch'
    if name not in BACKENDS:
        raise ValueError(f'unknown scan backend {name!r}; choose one of {BACKENDS} or "auto"')
    if not _is_available(name, op):
        raise BackendUnavailableError(_unavailable_message(name, op))
    if name == 'cuda' and device.type != 'cuda':
        raise BackendUnavailableError(
            f"scan backend 'cuda' needs CUDA tensors, got tensors on {device}")
    if name == 'cpu' and device.type != 'cpu':
        raise BackendUnavailableError(
            f"scan backend 'cpu' needs CPU tensors, got tensors on {device}")
    return name
