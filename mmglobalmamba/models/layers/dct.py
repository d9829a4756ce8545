"""2-D DCT-II and its inverse by cached orthonormal basis matrices.

Only ``idct(mask * dct(x))`` is ever used, so any consistent DCT/IDCT pair gives the same
band images as the released ``torch_dct`` (norm=None). Orthonormal bases make the inverse a
transpose, and a low-pass spectrum that is non-zero only in its top-left ``s_h x s_w`` block
needs only the first rows of each basis.
"""
import functools
import math

import torch


@functools.lru_cache(maxsize=64)
def _dct_basis_cached(n, device, dtype):
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # frequency index (n, 1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)  # sample index (1, n)
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    basis[0] *= math.sqrt(1.0 / n)
    basis[1:] *= math.sqrt(2.0 / n)
    return basis.to(device=device, dtype=dtype)


def dct_basis(n, device=None, dtype=torch.float32):
    """Orthonormal DCT-II matrix ``M`` (n, n): ``M @ v`` is the DCT of ``v``."""
    return _dct_basis_cached(int(n), torch.device(device or 'cpu'), dtype)


def _math_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def dct_2d(x, rows=None, cols=None):
    """Orthonormal 2-D DCT-II over the last two dims, keeping the first ``rows x cols``
    coefficients (all by default). x: (..., H, W) -> (..., rows, cols)."""
    H, W = x.shape[-2:]
    dtype = _math_dtype(x)
    m_h = dct_basis(H, x.device, dtype)[:rows or H]  # (rows, H)
    m_w = dct_basis(W, x.device, dtype)[:cols or W]  # (cols, W)
    return m_h @ x.to(dtype) @ m_w.T


def idct_2d(X, size):
    """Inverse of :func:`dct_2d` for a spectrum whose coefficients outside its
    (..., rows, cols) block are zero. Returns (..., H, W) with ``size=(H, W)``."""
    H, W = size
    rows, cols = X.shape[-2:]
    dtype = _math_dtype(X)
    m_h = dct_basis(H, X.device, dtype)[:rows]  # (rows, H)
    m_w = dct_basis(W, X.device, dtype)[:cols]  # (cols, W)
    return m_h.T @ X.to(dtype) @ m_w
