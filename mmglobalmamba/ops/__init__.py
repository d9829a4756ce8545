"""Selective-scan ops with one dispatch point: mamba_ssm / causal-conv1d CUDA kernels,
our compiled CPU kernel, or the plain PyTorch reference (see ``dispatch``).

Importing this package imports no optional kernel; they load on first use.
"""
from .causal_conv1d import causal_conv1d
from .dispatch import (BACKENDS, ENV_VAR, BackendUnavailableError, CPUKernelNotBuiltWarning,
                       available_backends, resolve_backend, scan_backend, scan_substitute)
from .mamba_inner import mamba_inner
from .reference import causal_conv1d_torch, selective_scan_torch
from .selective_scan import selective_scan

__all__ = [
    'selective_scan', 'causal_conv1d', 'mamba_inner', 'scan_backend', 'scan_substitute',
    'available_backends', 'resolve_backend', 'BackendUnavailableError',
    'CPUKernelNotBuiltWarning', 'BACKENDS', 'ENV_VAR', 'selective_scan_torch',
    'causal_conv1d_torch'
]
