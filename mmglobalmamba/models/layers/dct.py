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


def _triangle_blocks(n, blocks):
    """[(start, stop), ...]: ``blocks`` near-equal parts of range(n), empty ones dropped."""
    return [(n * i // blocks, n * (i + 1) // blocks) for i in range(blocks)
            if n * i // blocks < n * (i + 1) // blocks]


def dct_2d_triangle(x, rows, cols, blocks=4):
    """:func:`dct_2d` (x, rows, cols) on the low triangle ``u / rows + v / cols < 1`` only,
    zeros elsewhere: the second transform is done per band of ``rows / blocks`` frequency
    rows, each only as wide as the triangle there (5/8 of its cost with 4 blocks)."""
    H, W = x.shape[-2:]
    dtype = _math_dtype(x)
    m_h = dct_basis(H, x.device, dtype)[:rows]  # (rows, H)
    m_w = dct_basis(W, x.device, dtype)[:cols]  # (cols, W)
    y = m_h @ x.to(dtype)                       # (..., rows, W)
    out = y.new_zeros(*y.shape[:-2], rows, cols)
    for u0, u1 in _triangle_blocks(rows, blocks):
        width = -(-cols * (rows - u0) // rows)  # ceil: every v with u0 / rows + v / cols < 1
        out[..., u0:u1, :width] = y[..., u0:u1, :] @ m_w[:width].T
    return out


def triangle_product(left, X, right, blocks=4):
    """``left @ X @ right.T`` for X (..., s_h, s_w) that is zero outside its low triangle
    ``u / s_h + v / s_w < 1``: ``left @ X`` per band of columns, each over the rows the
    triangle has there. left: (m, s_h), right: (n, s_w) -> (..., m, n)."""
    s_h, s_w = X.shape[-2:]
    parts = []
    for v0, v1 in _triangle_blocks(s_w, blocks):
        height = -(-s_h * (s_w - v0) // s_w)    # ceil: every u with u / s_h + v0 / s_w < 1
        parts.append(left[:, :height] @ X[..., :height, v0:v1])
    return torch.cat(parts, dim=-1) @ right.T
