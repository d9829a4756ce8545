"""Parity tests for mmglobalmamba.ops: every available backend against the float64 plain
loops of tests/loop_reference.py (independent of the package code), forward and gradients.
How a backend is chosen, and the errors when one is missing: tests/test_dispatch.py."""
import itertools
import sys
import types

import pytest
import torch
import torch.nn.functional as F


from loop_reference import loop_causal_conv1d, loop_mamba_inner, loop_selective_scan
from mmglobalmamba import ops
from mmglobalmamba.ops import channels_last as cl_ops
from mmglobalmamba.ops import dispatch

HAS_CUDA = torch.cuda.is_available()


def _backend_params():
    """'cuda' / 'cpu' / 'torch', each skipped cleanly where it cannot run."""
    cuda_ok = HAS_CUDA and 'cuda' in ops.available_backends('mamba_inner')  # both packages
    cpu_ok = 'cpu' in ops.available_backends()
    return [
        pytest.param('cuda', marks=pytest.mark.skipif(
            not cuda_ok, reason='needs CUDA and mamba_ssm / causal_conv1d')),
        pytest.param('cpu', marks=pytest.mark.skipif(
            not cpu_ok, reason='CPU kernel mmglobalmamba._C not built')),
        pytest.param('torch'),
    ]


BACKENDS = _backend_params()


def _device(backend):
    return 'cuda' if backend == 'cuda' else 'cpu'


def _tol(backend):
    # Relative to the largest reference value; the CUDA kernels chunk and use atomics.
    return 1e-3 if backend == 'cuda' else 1e-4


def assert_rel_close(actual, expected, rel, name=''):
    """Max |actual - expected| <= rel * max |expected| (plus a tiny floor)."""
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = expected.abs().max().item() + 1e-12
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale + 1e-9, f'{name}: max abs err {err:.3e} vs scale {scale:.3e}'


def make_scan_inputs(batch, dim, L, N, groups=0, has_D=True, has_z=True, has_bias=True,
                     softplus=True, device='cpu', dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    u = rnd(batch, dim, L)
    if softplus:
        delta = rnd(batch, dim, L, scale=0.7)
    else:  # a positive step without softplus
        delta = (torch.rand(batch, dim, L, generator=g) * 0.5 + 0.05).to(device, dtype)
    A = -(torch.rand(dim, N, generator=g) + 0.3).to(device, dtype)
    bshape = (batch, groups, N, L) if groups else (batch, N, L)
    B = rnd(*bshape)
    C = rnd(*bshape)
    D = rnd(dim) if has_D else None
    z = rnd(batch, dim, L) if has_z else None
    bias = rnd(dim, scale=0.3) if has_bias else None
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias,
                delta_softplus=softplus)


def _grads(fn, kw, names):
    """Forward through fn(**kw) and gradients of a fixed random projection of the output."""
    leaves = {k: kw[k].detach().clone().requires_grad_() for k in names if kw[k] is not None}
    args = dict(kw, **leaves)
    out = fn(**args)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(123),
                    dtype=torch.float64).to(out.device)
    (out.double() * w).sum().backward()
    return out, {k: v.grad for k, v in leaves.items()}


SCAN_INPUTS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
SHAPES = [(1, 3, 1, 2), (2, 4, 7, 3), (2, 6, 33, 4), (3, 5, 16, 8)]
FLAGS = list(itertools.product([False, True], repeat=4))  # D, z, bias, softplus
_REF_CACHE = {}


# ---------------------------------------------------------------------------------------
# selective_scan


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'b{}d{}L{}N{}'.format(*s))
@pytest.mark.parametrize('flags', FLAGS,
                         ids=lambda f: 'D{:d}z{:d}bias{:d}sp{:d}'.format(*f))
def test_selective_scan_matches_loop(backend, shape, flags):
    has_D, has_z, has_bias, softplus = flags
    batch, dim, L, N = shape
    kw = make_scan_inputs(batch, dim, L, N, has_D=has_D, has_z=has_z, has_bias=has_bias,
                          softplus=softplus, device=_device(backend))
    out, grads = _grads(lambda **a: ops.selective_scan(**a, backend=backend), kw, SCAN_INPUTS)
    key = (shape, flags)
    if key not in _REF_CACHE:  # the loop reference is shared by the backends
        ref_kw = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}
        _REF_CACHE[key] = _grads(loop_selective_scan, ref_kw, SCAN_INPUTS)
    ref, ref_grads = _REF_CACHE[key]
    assert out.dtype == kw['u'].dtype and out.shape == (batch, dim, L)
    tol = _tol(backend)
    assert_rel_close(out, ref, tol, 'out')
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        assert grads[name] is not None, name
        assert_rel_close(grads[name], ref_grads[name], tol, 'd' + name)


@pytest.mark.parametrize('backend', BACKENDS)
def test_selective_scan_grouped_bc(backend):
    kw = make_scan_inputs(2, 6, 9, 3, groups=3, device=_device(backend))
    out, grads = _grads(lambda **a: ops.selective_scan(**a, backend=backend), kw, SCAN_INPUTS)
    ref_kw = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}
    ref, ref_grads = _grads(loop_selective_scan, ref_kw, SCAN_INPUTS)
    assert_rel_close(out, ref, _tol(backend), 'out')
    for name in ref_grads:
        assert grads[name].shape == kw[name].shape
        assert_rel_close(grads[name], ref_grads[name], _tol(backend), 'd' + name)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_selective_scan_low_precision_inputs(backend, dtype):
    """fp16 / bf16 in, fp32 math inside, output and gradients in the inputs' dtypes."""
    kw = make_scan_inputs(2, 4, 11, 4, device=_device(backend))
    low = {k: (v.to(dtype) if torch.is_tensor(v) and k not in ('A', 'D', 'delta_bias') else v)
           for k, v in kw.items()}
    out, grads = _grads(lambda **a: ops.selective_scan(**a, backend=backend), low,
                        SCAN_INPUTS)
    assert out.dtype == dtype
    for name, grad in grads.items():
        assert grad.dtype == low[name].dtype, name
    ref = loop_selective_scan(**{k: (v.cpu() if torch.is_tensor(v) else v)
                                 for k, v in low.items()})
    assert_rel_close(out.float(), ref, 2e-2, 'out')


@pytest.mark.parametrize('softplus', [False, True])
def test_cpu_kernel_gradcheck_float64(softplus):
    if 'cpu' not in ops.available_backends():
        pytest.skip('CPU kernel mmglobalmamba._C not built')
    kw = make_scan_inputs(2, 2, 4, 3, dtype=torch.float64, softplus=softplus, seed=3)
    names = SCAN_INPUTS
    leaves = [kw[k].detach().clone().requires_grad_() for k in names]

    def fn(*xs):
        args = dict(zip(names, xs))
        return ops.selective_scan(**args, delta_softplus=softplus, backend='cpu')

    assert fn(*leaves).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_cpu_kernel_grouped_gradcheck_float64():
    if 'cpu' not in ops.available_backends():
        pytest.skip('CPU kernel mmglobalmamba._C not built')
    kw = make_scan_inputs(1, 4, 4, 2, groups=2, dtype=torch.float64, seed=5)
    leaves = [kw[k].detach().clone().requires_grad_() for k in SCAN_INPUTS]

    def fn(*xs):
        return ops.selective_scan(**dict(zip(SCAN_INPUTS, xs)), delta_softplus=True,
                                  backend='cpu')

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('N', [16, 17, 40, 64, 72])
def test_cpu_kernel_state_sizes(N):
    """State sizes that are and are not multiples of the 8-lane reduction, up to 72."""
    if 'cpu' not in ops.available_backends():
        pytest.skip('CPU kernel mmglobalmamba._C not built')
    kw = make_scan_inputs(2, 3, 19, N, seed=N)
    out, grads = _grads(lambda **a: ops.selective_scan(**a, backend='cpu'), kw, SCAN_INPUTS)
    ref, ref_grads = _grads(loop_selective_scan, kw, SCAN_INPUTS)
    assert_rel_close(out, ref, 1e-4, 'out')
    for name in ref_grads:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


def test_cpu_kernel_long_sequence_matches_torch_backend():
    """A longer, wider case (parallel chunks, dB/dC reduction) against the torch backend."""
    if 'cpu' not in ops.available_backends():
        pytest.skip('CPU kernel mmglobalmamba._C not built')
    kw = make_scan_inputs(2, 24, 300, 16, seed=7)
    out, grads = _grads(lambda **a: ops.selective_scan(**a, backend='cpu'), kw, SCAN_INPUTS)
    ref, ref_grads = _grads(lambda **a: ops.selective_scan(**a, backend='torch'), kw,
                            SCAN_INPUTS)
    assert_rel_close(out, ref, 1e-4, 'out')
    for name in ref_grads:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


def test_selective_scan_rejects_bad_shapes():
    kw = make_scan_inputs(2, 4, 5, 3)
    kw['B'] = kw['B'][:, :2]
    with pytest.raises(ValueError, match='B must be'):
        ops.selective_scan(**kw, backend='torch')


# ---------------------------------------------------------------------------------------
# Channels-last CPU kernels (the 'cpu' route of mamba_inner)

needs_cpu_kernel = pytest.mark.skipif('cpu' not in ops.available_backends(),
                                      reason='CPU kernel mmglobalmamba._C not built')
ROW_INPUTS = ('u', 'delta', 'z', 'B', 'C')


def _row_leaf(t, pad=3):
    """A leaf (batch, L, k + pad) holding t (batch, k, L) transposed at columns 1..k, and
    the (batch, L, k) view of those columns: rows with stride 1 and row stride k + pad, the
    layout of slices of a projection output."""
    b, k, L = t.shape
    wide = torch.zeros(b, L, k + pad, dtype=t.dtype)
    wide[..., 1:k + 1] = t.transpose(1, 2)
    wide.requires_grad_()
    return wide, wide[..., 1:k + 1]


def _row_args(kw, skip=()):
    """Arguments for the channels-last functions from ``make_scan_inputs``' kw: the row
    inputs as strided views of fresh leaves (``_row_leaf``), other tensors as fresh leaves.
    Returns (args, leaves)."""
    args, leaves = {}, {}
    for k, v in kw.items():
        if k in skip:
            continue
        if k in ROW_INPUTS and v is not None:
            leaves[k], args[k] = _row_leaf(v)
        elif torch.is_tensor(v):
            args[k] = leaves[k] = v.detach().clone().requires_grad_()
        else:
            args[k] = v
    return args, leaves


def _row_grads(leaves, kw):
    """Gradients of ``_row_args``' leaves in the (batch, k, L) conventions of kw; the
    padding columns around each row view must get none."""
    grads = {}
    for k, leaf in leaves.items():
        if k in ROW_INPUTS:
            grads[k] = leaf.grad[..., 1:kw[k].shape[1] + 1].transpose(1, 2)
            assert leaf.grad[..., 0].abs().max() == 0 and leaf.grad[..., -1].abs().max() == 0
        else:
            grads[k] = leaf.grad
    return grads


def _channels_last_scan_grads(kw):
    """Output (batch, dim, L) and input gradients of selective_scan_channels_last on
    strided row views, in the (batch, dim, L) conventions of the loop reference."""
    args, leaves = _row_args(kw)
    out = cl_ops.selective_scan_channels_last(**args)               # (batch, L, dim)
    assert out.is_contiguous()
    out = out.transpose(1, 2)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(123),
                    dtype=torch.float64)
    (out.double() * w).sum().backward()
    return out, _row_grads(leaves, kw)


# dim 16 / 32 / 40: full 8-channel vector blocks; 3, 17: a narrow tail block; N from 2 to
# 64 (the backward lane-reduces dB / dC 8 states at a time).
CL_SHAPES = [(1, 3, 1, 2), (2, 16, 7, 16), (2, 40, 33, 16), (3, 32, 16, 5), (1, 17, 20, 64)]


@needs_cpu_kernel
@pytest.mark.parametrize('shape', CL_SHAPES, ids=lambda s: 'b{}d{}L{}N{}'.format(*s))
@pytest.mark.parametrize('flags', FLAGS,
                         ids=lambda f: 'D{:d}z{:d}bias{:d}sp{:d}'.format(*f))
def test_channels_last_scan_matches_loop(shape, flags):
    has_D, has_z, has_bias, softplus = flags
    batch, dim, L, N = shape
    kw = make_scan_inputs(batch, dim, L, N, has_D=has_D, has_z=has_z, has_bias=has_bias,
                          softplus=softplus, seed=sum(shape))
    out, grads = _channels_last_scan_grads(kw)
    ref, ref_grads = _grads(loop_selective_scan, kw, SCAN_INPUTS)
    assert_rel_close(out, ref, 1e-4, 'out')
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


@needs_cpu_kernel
@pytest.mark.parametrize('shape', [(2, 16, 9, 16, 3), (1, 40, 21, 5, 12), (3, 7, 1, 4, 2)],
                         ids=lambda s: 'b{}d{}L{}N{}R{}'.format(*s))
def test_channels_last_scan_forms_delta_from_dt_proj(shape):
    """With delta_proj_weight the kernel forms delta = dt @ W^T itself: forward and the
    gradients of dt and W (and the rest) against the loop reference on that product."""
    batch, dim, L, N, R = shape
    kw = make_scan_inputs(batch, dim, L, N, seed=sum(shape))
    g = torch.Generator().manual_seed(R)
    dt = torch.randn(batch, R, L, generator=g) * 0.5                  # (batch, R, L)
    W = (torch.randn(dim, R, generator=g) * 0.5).requires_grad_()
    dt_wide, dt_rows = _row_leaf(dt)
    args, leaves = _row_args(kw, skip=('delta', ))
    out = cl_ops.selective_scan_channels_last(delta=dt_rows, delta_proj_weight=W, **args)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (out.double() * w_out).sum().backward()
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in kw.items()
                  if torch.is_tensor(v) and k != 'delta'}
    dt64 = dt.double().requires_grad_()
    W64 = W.detach().double().requires_grad_()
    delta = torch.einsum('brl,dr->bdl', dt64, W64)
    ref = loop_selective_scan(delta=delta, delta_softplus=True, **ref_leaves)  # (b, dim, L)
    (ref.transpose(1, 2) * w_out).sum().backward()
    assert_rel_close(out.transpose(1, 2), ref, 1e-4, 'out')
    assert_rel_close(dt_wide.grad[..., 1:R + 1].transpose(1, 2), dt64.grad, 1e-4, 'd dt')
    assert_rel_close(W.grad, W64.grad, 1e-4, 'dW')
    for k, grad in _row_grads(leaves, kw).items():
        assert_rel_close(grad, ref_leaves[k].grad, 1e-4, 'd' + k)


@needs_cpu_kernel
def test_channels_last_scan_gradcheck_float64():
    kw = make_scan_inputs(2, 3, 5, 3, dtype=torch.float64, seed=11)
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
    leaves = [(kw[k].transpose(1, 2) if k in ROW_INPUTS else kw[k]).detach().clone()
              .requires_grad_() for k in names]

    def fn(*xs):
        return cl_ops.selective_scan_channels_last(*xs, delta_softplus=True)

    assert fn(*leaves).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_cpu_kernel
def test_channels_last_scan_half_inputs():
    kw = make_scan_inputs(2, 20, 9, 16, seed=4)
    rows = {k: (v.transpose(1, 2).half() if k in ROW_INPUTS else v) for k, v in kw.items()}
    out = cl_ops.selective_scan_channels_last(**rows)
    assert out.dtype == torch.float16
    ref = loop_selective_scan(**{k: (v.transpose(1, 2) if k in ROW_INPUTS else v)
                                 for k, v in rows.items()})
    assert_rel_close(out.transpose(1, 2).float(), ref, 2e-2, 'out')


@needs_cpu_kernel
@pytest.mark.parametrize('dim', [8, 40])
@pytest.mark.parametrize('width', [1, 2, 4, 5])
@pytest.mark.parametrize('silu', [False, True])
@pytest.mark.parametrize('has_bias', [False, True])
@pytest.mark.parametrize('L', [1, 3, 70])
def test_channels_last_conv_matches_loop(dim, width, silu, has_bias, L):
    g = torch.Generator().manual_seed(dim * 100 + width * 10 + L)
    x = torch.randn(2, dim, L, generator=g)
    w = torch.randn(dim, width, generator=g).requires_grad_()
    b = torch.randn(dim, generator=g).requires_grad_() if has_bias else None
    wide, rows = _row_leaf(x)
    out = cl_ops.causal_conv1d_channels_last(rows, w, b, silu=silu)   # (2, L, dim)
    act = 'silu' if silu else None
    leaves = [t.detach().double().requires_grad_() for t in (x, w) + ((b,) if has_bias else ())]
    ref = loop_causal_conv1d(leaves[0], leaves[1], leaves[2] if has_bias else None, act)
    assert_rel_close(out.transpose(1, 2), ref, 1e-5, 'out')
    gw = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ref * gw).sum().backward()
    (out.transpose(1, 2).double() * gw).sum().backward()
    assert_rel_close(wide.grad[..., 1:dim + 1].transpose(1, 2), leaves[0].grad, 1e-5, 'dx')
    assert_rel_close(w.grad, leaves[1].grad, 1e-5, 'dw')
    if has_bias:
        assert_rel_close(b.grad, leaves[2].grad, 1e-5, 'db')


class _KernelSpy:
    """Stands in for mmglobalmamba._C and records the tensors each function receives."""

    def __init__(self, module):
        self._module, self.calls = module, []

    def __getattr__(self, name):
        fn = getattr(self._module, name)

        def record(*args, **kwargs):
            self.calls.append((name, args))
            return fn(*args, **kwargs)

        return record


@needs_cpu_kernel
@pytest.mark.parametrize('L', [37, 1])
def test_cpu_mixer_reads_projection_rows_without_copies(monkeypatch, L):
    """The point of the channels-last route: with xz the transposed in_proj output, the
    conv reads x and the scan reads z where in_proj wrote them, and B, C, dt where x_proj
    wrote them, forward and backward (whose kernels get the same row views and no
    autograd re-run); the result matches the loop reference (forward, all gradients)."""
    spy = _KernelSpy(dispatch.cpu_kernel())
    monkeypatch.setattr(cl_ops, 'cpu_kernel', lambda: spy)
    kw = make_mamba_inner_inputs(batch=2, d_model=12, d_inner=24, L=L, d_state=16,
                                 dt_rank=3)
    rows = kw['xz'].transpose(1, 2).contiguous()         # (batch, L, 2 * d_inner) as in_proj
    kw['xz'] = rows.transpose(1, 2)
    names = list(kw)
    out, grads = _grads(lambda **a: ops.mamba_inner(**a, backend='cpu'), kw, names)
    calls = [name for name, _ in spy.calls]
    assert calls == ['conv_fwd', 'scan_fwd', 'scan_bwd', 'conv_bwd']
    by_name = dict(spy.calls)
    assert by_name['scan_fwd'][9] is not None             # dt_proj formed in the scan
    # _grads clones xz; a clone of the transposed view keeps its (rows) strides.
    for step in ('fwd', 'bwd'):
        conv_x = by_name['conv_' + step][0]
        u, dt, _, B, C, _, z = by_name['scan_' + step][:7]
        for t in (conv_x, z):  # rows of the in_proj output (a size-1 dim: any stride)
            assert t.stride(0) == L * 48 and t.stride(2) == 1 and (L == 1 or t.stride(1) == 48)
        assert z.data_ptr() == conv_x.data_ptr() + 24 * z.element_size()
        assert B.shape == (2, L, 1, 16) and B.stride(0) == L * 35 and B.stride(3) == 1
        assert L == 1 or B.stride(1) == 35
        assert C.data_ptr() == B.data_ptr() + 16 * 4
        assert dt.shape == (2, L, 3) and B.data_ptr() == dt.data_ptr() + 3 * 4
        assert u.is_contiguous()                          # the conv output
    ref, ref_grads = _grads(loop_mamba_inner, kw, names)
    assert_rel_close(out, ref, 1e-4, 'out')
    for name in names:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


@needs_cpu_kernel
def test_cpu_selective_scan_reads_transposed_views(monkeypatch):
    """The (batch, dim, L) op hands the kernel transposed views of u, delta, z and the
    output gradient (no copies), and returns a view of the kernel's rows."""
    spy = _KernelSpy(dispatch.cpu_kernel())
    monkeypatch.setattr(cl_ops, 'cpu_kernel', lambda: spy)
    kw = make_scan_inputs(2, 20, 13, 4, seed=4)
    out, grads = _grads(lambda **a: ops.selective_scan(**a, backend='cpu'), kw, SCAN_INPUTS)
    for name, args in spy.calls:
        for t in (args[0], args[1], args[6]) + ((args[10], ) if name == 'scan_bwd' else ()):
            assert t.shape == (2, 13, 20) and t.stride() == (20 * 13, 1, 13), name
    ref, ref_grads = _grads(loop_selective_scan, kw, SCAN_INPUTS)
    assert_rel_close(out, ref, 1e-4, 'out')
    for name in ref_grads:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


@needs_cpu_kernel
@pytest.mark.parametrize('d_inner,d_state,width', [(13, 5, 4), (40, 16, 3), (8, 17, 2)])
def test_cpu_mixer_odd_sizes(d_inner, d_state, width):
    """Channel tails (d_inner not a multiple of the vector width), odd N and L."""
    kw = make_mamba_inner_inputs(batch=3, d_model=7, d_inner=d_inner, L=19, d_state=d_state,
                                 dt_rank=2, width=width, seed=d_inner)
    names = list(kw)
    out, grads = _grads(lambda **a: ops.mamba_inner(**a, backend='cpu'), kw, names)
    ref, ref_grads = _grads(loop_mamba_inner, kw, names)
    assert_rel_close(out, ref, 1e-4, 'out')
    for name in names:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


@needs_cpu_kernel
def test_channels_last_grouped_bc():
    """B, C as (batch, L, G, N) rows: blocks never straddle two groups."""
    kw = make_scan_inputs(2, 30, 11, 3, groups=3, seed=9)   # 10 channels per group
    args, leaves = {}, {}
    for k, v in kw.items():
        if k in ('B', 'C'):
            args[k] = leaves[k] = v.permute(0, 3, 1, 2).detach().clone().requires_grad_()
        elif k in ROW_INPUTS:
            args[k] = leaves[k] = v.transpose(1, 2).detach().clone().requires_grad_()
        elif torch.is_tensor(v):
            args[k] = leaves[k] = v.detach().clone().requires_grad_()
        else:
            args[k] = v
    out = cl_ops.selective_scan_channels_last(**args).transpose(1, 2)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out.double() * w).sum().backward()
    ref_kw = {k: (v.detach().clone().requires_grad_() if torch.is_tensor(v) else v)
              for k, v in kw.items()}
    ref = loop_selective_scan(**ref_kw)
    (ref * w).sum().backward()
    assert_rel_close(out, ref, 1e-4, 'out')
    for k, leaf in leaves.items():
        grad = leaf.grad.permute(0, 2, 3, 1) if k in ('B', 'C') else (
            leaf.grad.transpose(1, 2) if k in ROW_INPUTS else leaf.grad)
        assert_rel_close(grad, ref_kw[k].grad, 1e-4, 'd' + k)


@needs_cpu_kernel
def test_channels_last_dt_proj_and_conv_gradcheck_float64():
    """gradcheck of the row kernels' backward in float64: the scan with dt_proj folded in
    (dt, W and everything else) and the conv with SiLU, on strided row views."""
    kw = make_scan_inputs(2, 11, 6, 3, dtype=torch.float64, seed=2)
    g = torch.Generator().manual_seed(0)
    dt = (torch.randn(2, 6, 3 + 2, generator=g, dtype=torch.float64) * 0.5)[..., 1:4]
    W = torch.randn(11, 3, generator=g, dtype=torch.float64) * 0.5
    names = ('u', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
    leaves = [(kw[k].transpose(1, 2) if k in ROW_INPUTS else kw[k]).detach().clone()
              .requires_grad_() for k in names] + [dt.requires_grad_(), W.requires_grad_()]

    def scan(u, A, B, C, D, z, bias, dt, W):
        return cl_ops.selective_scan_channels_last(u, dt, A, B, C, D, z, bias, True, W)

    assert torch.autograd.gradcheck(scan, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)
    x = torch.randn(2, 7, 13, generator=g, dtype=torch.float64)[..., 2:11].requires_grad_()
    w = torch.randn(9, 4, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(9, generator=g, dtype=torch.float64).requires_grad_()
    for silu in (False, True):
        assert torch.autograd.gradcheck(
            lambda *t: cl_ops.causal_conv1d_channels_last(*t, silu=silu), (x, w, b),
            eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_cpu_kernel
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cpu_mixer_low_precision_inputs(dtype):
    """fp16 / bf16 xz through the channels-last route: fp32 inside, output and gradients
    in the inputs' dtypes, close to the fp64 loops."""
    kw = make_mamba_inner_inputs(batch=2, d_model=8, d_inner=16, L=12, d_state=4, dt_rank=2)
    low = {k: v.to(dtype) for k, v in kw.items()}
    names = list(low)
    out, grads = _grads(lambda **a: ops.mamba_inner(**a, backend='cpu'), low, names)
    ref, ref_grads = _grads(loop_mamba_inner, low, names)
    assert out.dtype == dtype
    assert_rel_close(out.float(), ref, 3e-2, 'out')
    for name in names:
        assert grads[name].dtype == dtype, name
        assert_rel_close(grads[name].float(), ref_grads[name], 5e-2, 'd' + name)


@needs_cpu_kernel
def test_cpu_kernel_rejects_bad_input():
    """The kernel's own checks: dtype, shape, stride and state-size errors are clear."""
    kernel = dispatch.cpu_kernel()
    b, L, d, N = 1, 4, 8, 2
    u, A, B = torch.randn(b, L, d), -torch.rand(d, N), torch.randn(b, L, 1, N)
    with pytest.raises(RuntimeError, match='dtype'):
        kernel.scan_fwd(u, u.double(), A, B, B, None, None, None, True, None)
    with pytest.raises(RuntimeError, match='stride 1'):
        kernel.scan_fwd(u, u, A, torch.randn(b, N, L, 1).permute(0, 2, 3, 1), B, None, None,
                        None, True, None)
    with pytest.raises(RuntimeError, match=r'A must be \(dim, N\)'):
        kernel.scan_fwd(u, u, -torch.rand(d, 300), B, B, None, None, None, True, None)
    with pytest.raises(RuntimeError, match='G dividing dim'):
        kernel.scan_fwd(u, u, A, torch.randn(b, L, 3, N), B, None, None, None, True, None)
    with pytest.raises(RuntimeError, match='float32 or float64'):
        kernel.conv_fwd(u.half(), torch.randn(d, 4).half(), None, True)


# ---------------------------------------------------------------------------------------
# causal_conv1d


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('width', [2, 4])
@pytest.mark.parametrize('activation', [None, 'silu'])
@pytest.mark.parametrize('has_bias', [False, True])
@pytest.mark.parametrize('L', [1, 9])
def test_causal_conv1d_matches_loop(backend, width, activation, has_bias, L):
    dev = _device(backend)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, L, generator=g).to(dev).requires_grad_()
    w = torch.randn(8, width, generator=g).to(dev).requires_grad_()
    b = torch.randn(8, generator=g).to(dev).requires_grad_() if has_bias else None
    out = ops.causal_conv1d(x, w, b, activation, backend=backend)
    ref = loop_causal_conv1d(x.detach().cpu(), w.detach().cpu(),
                             None if b is None else b.detach().cpu(), activation)
    assert out.shape == x.shape
    assert_rel_close(out, ref, _tol(backend), 'out')
    # Gradients against autograd through the loop.
    leaves = [t.detach().cpu().double().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    ref_out = loop_causal_conv1d(leaves[0], leaves[1], leaves[2] if b is not None else None,
                                 activation)
    gw = torch.randn(ref_out.shape, generator=g, dtype=torch.float64)
    (ref_out * gw).sum().backward()
    (out.double() * gw.to(dev)).sum().backward()
    for mine, theirs, name in zip((x, w, b), leaves, ('x', 'w', 'b')):
        assert_rel_close(mine.grad, theirs.grad, _tol(backend), 'd' + name)


def test_causal_conv1d_accepts_3d_weight():
    x = torch.randn(1, 3, 6)
    w = torch.randn(3, 1, 4)
    ref = loop_causal_conv1d(x, w)
    assert_rel_close(ops.causal_conv1d(x, w), ref, 1e-5)


# ---------------------------------------------------------------------------------------
# mamba_inner


def make_mamba_inner_inputs(batch=2, d_model=6, d_inner=8, L=10, d_state=4, dt_rank=2,
                            width=4, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    return dict(
        xz=rnd(batch, 2 * d_inner, L),
        conv1d_weight=rnd(d_inner, width, scale=0.5),
        conv1d_bias=rnd(d_inner, scale=0.1),
        x_proj_weight=rnd(dt_rank + 2 * d_state, d_inner, scale=0.3),
        delta_proj_weight=rnd(d_inner, dt_rank, scale=0.5),
        out_proj_weight=rnd(d_model, d_inner, scale=0.3),
        out_proj_bias=rnd(d_model, scale=0.1),
        A=-(torch.rand(d_inner, d_state, generator=g) + 0.5).to(device),
        D=rnd(d_inner),
        delta_bias=rnd(d_inner, scale=0.3),
    )


@pytest.mark.parametrize('backend', BACKENDS)
def test_mamba_inner_matches_composition(backend):
    kw = make_mamba_inner_inputs(device=_device(backend))
    names = list(kw)
    out, grads = _grads(lambda **a: ops.mamba_inner(**a, backend=backend), kw, names)
    ref, ref_grads = _grads(loop_mamba_inner,
                            {k: v.cpu() for k, v in kw.items()}, names)
    assert out.shape == (2, 10, 6)
    assert_rel_close(out, ref, _tol(backend), 'out')
    for name in names:
        assert_rel_close(grads[name], ref_grads[name], _tol(backend), 'd' + name)


@pytest.mark.parametrize('backend', BACKENDS)
def test_mamba_inner_3d_conv_weight_and_no_bias(backend):
    kw = make_mamba_inner_inputs(device=_device(backend), L=5)
    kw['out_proj_bias'] = None
    ref = loop_mamba_inner(**{k: (v.cpu() if v is not None else None) for k, v in kw.items()})
    kw['conv1d_weight'] = kw['conv1d_weight'].unsqueeze(1)  # (d_inner, 1, width)
    out = ops.mamba_inner(**kw, backend=backend)
    assert_rel_close(out, ref, _tol(backend))


@pytest.mark.skipif(not HAS_CUDA, reason='needs CUDA')
def test_cuda_mamba_inner_at_mixer_like_size():
    """The fused CUDA mixer at a realistic d_state / width against the fp64 loops."""
    if 'cuda' not in ops.available_backends('mamba_inner'):
        pytest.skip('mamba_ssm / causal_conv1d not importable')
    kw = make_mamba_inner_inputs(batch=2, d_model=32, d_inner=64, L=97, d_state=16,
                                 dt_rank=4, device='cuda')
    out = ops.mamba_inner(**kw, backend='cuda')
    ref = loop_mamba_inner(**{k: v.cpu() for k, v in kw.items()})  # fp64, no TF32
    assert_rel_close(out, ref, 1e-3)


def test_cuda_route_adds_out_proj_bias_itself(monkeypatch):
    """mamba_ssm's fused backward returns a scalar as the out_proj bias gradient, so the
    'cuda' route must call it with out_proj_bias=None and add the bias itself. Checked on
    CPU with a stand-in for mamba_inner_fn that refuses a bias, as the real one fails."""
    mamba_inner_module = sys.modules['mmglobalmamba.ops.mamba_inner']
    calls = []

    def fake_mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight,
                            delta_proj_weight, out_proj_weight, out_proj_bias, A, **kw):
        assert out_proj_bias is None, 'mamba_ssm cannot take a gradient for out_proj_bias'
        assert conv1d_weight.dim() == 3                       # (d_inner, 1, width)
        calls.append(kw)
        return ops.mamba_inner(xz, conv1d_weight.squeeze(1), conv1d_bias, x_proj_weight,
                               delta_proj_weight, out_proj_weight, None, A,
                               backend='torch', **kw)

    fake = types.SimpleNamespace(mamba_inner_fn=fake_mamba_inner_fn)
    monkeypatch.setattr(mamba_inner_module, 'mamba_ssm_interface', lambda: fake)
    real_resolve = mamba_inner_module.resolve_backend
    monkeypatch.setattr(mamba_inner_module, 'resolve_backend',
                        lambda name, *a: 'cuda' if name == 'cuda' else real_resolve(name, *a))
    kw = make_mamba_inner_inputs()
    names = list(kw)
    out, grads = _grads(lambda **a: ops.mamba_inner(**a, backend='cuda'), kw, names)
    ref, ref_grads = _grads(loop_mamba_inner, kw, names)
    assert len(calls) == 1 and calls[0]['delta_softplus'] is True
    assert_rel_close(out, ref, 1e-4, 'out')
    for name in names:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, 'd' + name)


# ---------------------------------------------------------------------------------------
# The torch backend (backend choice and its errors: tests/test_dispatch.py)


def test_torch_backend_is_the_readable_reference():
    kw = make_scan_inputs(2, 3, 8, 4)
    assert_rel_close(ops.selective_scan_torch(**kw), loop_selective_scan(**kw), 1e-5)
    x, w = torch.randn(2, 3, 7), torch.randn(3, 3)
    assert_rel_close(ops.causal_conv1d_torch(x, w, activation='silu'),
                     F.silu(loop_causal_conv1d(x, w)), 1e-5)
