"""The Mamba mixer on CPU in the (batch, L, features) layout of its linear layers.

``mamba_inner_channels_last`` computes what ``mamba_inner`` computes, but the in_proj
output rows go straight into the channels-last conv and scan kernels of
``mmglobalmamba._C`` and the scan's rows straight into out_proj: the forward makes no
transposed copies (in the (batch, dim, L) route they cost about as much as the scan
itself), and the scan forms dt_proj's (batch, L, d_inner) output block by block itself.
Backward passes reuse the tested pieces, paying the transposes there: the (batch, dim, L)
scan kernel's backward and autograd through PyTorch's conv1d.
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .cpu_kernel import selective_scan_cpu_backward
from .dispatch import cpu_kernel
from .reference import causal_conv1d_torch, compute_dtype

__all__ = ['mamba_inner_channels_last', 'selective_scan_channels_last',
           'causal_conv1d_channels_last']


def _rows(t, dtype):
    """``t`` in ``dtype`` with stride 1 along its last dim (copied only when needed)."""
    if t is None:
        return None
    t = t.to(dtype)
    return t if t.stride(-1) == 1 else t.contiguous()


class SelectiveScanChannelsLastFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, delta_proj_weight):
        cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
        out = cpu_kernel().selective_scan_fwd_cl(
            _rows(u, cd), _rows(delta, cd), A.to(cd), _rows(B, cd), _rows(C, cd),
            None if D is None else D.to(cd).contiguous(), _rows(z, cd),
            None if delta_bias is None else delta_bias.to(cd).contiguous(),
            bool(delta_softplus),
            None if delta_proj_weight is None else delta_proj_weight.to(cd))
        ctx.delta_softplus = bool(delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
        return out.to(u.dtype)                                      # (batch, L, dim)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, weight = ctx.saved_tensors

        def t(x):  # (batch, L, k) <-> (batch, k, L)
            return None if x is None else x.transpose(1, 2)

        dt = delta
        if weight is not None:  # delta was formed inside the kernel: form it again
            delta = F.linear(dt, weight.to(dt.dtype))               # (batch, L, dim)
        grads = selective_scan_cpu_backward(t(u), t(delta), A, t(B), t(C), D, t(z),
                                            delta_bias, t(dout), ctx.delta_softplus)
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        ddelta, dweight = t(ddelta), None
        if weight is not None:  # through delta = dt @ weight^T
            dweight = torch.einsum('bld,blr->dr', ddelta, dt).to(weight.dtype)
            ddelta = ddelta @ weight.to(ddelta.dtype)               # d dt: (batch, L, R)
        return t(du), ddelta, dA, t(dB), t(dC), dD, t(dz), dbias, None, dweight


def selective_scan_channels_last(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                 delta_softplus=False, delta_proj_weight=None):
    """Selective scan on rows: u, delta, z (batch, L, dim); B, C (batch, L, N); A (dim, N);
    D, delta_bias (dim,). Returns (batch, L, dim). Same math as ``selective_scan``.

    With ``delta_proj_weight`` (dim, R), ``delta`` is the low-rank dt (batch, L, R) and the
    kernel forms ``dt @ delta_proj_weight.T`` per block of channels itself (the mixer's
    dt_proj without writing the (batch, L, dim) delta out)."""
    if A.is_complex():
        raise NotImplementedError('complex A is not supported by the CPU kernel')
    return SelectiveScanChannelsLastFn.apply(u, delta, A, B, C, D, z, delta_bias,
                                             delta_softplus, delta_proj_weight)


class CausalConv1dChannelsLastFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        cd = compute_dtype(x, weight, bias)
        out = cpu_kernel().causal_conv1d_fwd_cl(
            _rows(x, cd), weight.to(cd), None if bias is None else bias.to(cd).contiguous(),
            bool(silu))                                             # (batch, L, dim)
        ctx.silu = bool(silu)
        ctx.save_for_backward(x, weight, bias)
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        leaves = [v.detach().requires_grad_(need) if v is not None else None
                  for v, need in zip((x, weight, bias), ctx.needs_input_grad)]
        with torch.enable_grad():
            out = causal_conv1d_torch(leaves[0].transpose(1, 2), leaves[1], leaves[2],
                                      'silu' if ctx.silu else None)  # (batch, dim, L)
            wanted = [v for v in leaves if v is not None and v.requires_grad]
            got = iter(torch.autograd.grad(out, wanted, dout.transpose(1, 2)))
        grads = [next(got) if v is not None and v.requires_grad else None for v in leaves]
        return (*grads, None)


def causal_conv1d_channels_last(x, weight, bias=None, silu=False):
    """Depthwise causal conv on rows: x (batch, L, dim), weight (dim, width), bias (dim,).
    Returns (batch, L, dim); SiLU applied when ``silu``."""
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    return CausalConv1dChannelsLastFn.apply(x, weight, bias, silu)


def mamba_inner_channels_last(xz, conv1d_weight, conv1d_bias, x_proj_weight,
                              delta_proj_weight, out_proj_weight, out_proj_bias, A, D=None,
                              delta_bias=None, delta_softplus=True):
    """``mamba_inner`` on the in_proj output rows ``xz`` (batch, L, 2 * d_inner), x first.

    Returns (batch, L, d_model). Needs the CPU kernel (``mmglobalmamba._C``)."""
    d_inner, d_state = A.shape
    dt_rank = delta_proj_weight.shape[1]
    x, z = xz.split([d_inner, d_inner], dim=-1)                     # (batch, L, d_inner)
    x = causal_conv1d_channels_last(x, conv1d_weight, conv1d_bias, silu=True)
    x_dbl = F.linear(x, x_proj_weight)                              # (batch, L, r + 2N)
    dt, B, C = x_dbl.split([dt_rank, d_state, d_state], dim=-1)     # dt_proj: in the scan
    y = selective_scan_channels_last(x, dt, A, B, C, D, z, delta_bias, delta_softplus,
                                     delta_proj_weight)
    return F.linear(y, out_proj_weight, out_proj_bias)              # (batch, L, d_model)
