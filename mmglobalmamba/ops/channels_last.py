"""The CPU kernel (``mmglobalmamba._C``) behind autograd, in the (batch, L, features) layout
the mixer's linear layers write.

``mamba_inner_channels_last`` computes what ``mamba_inner`` computes: the conv reads x and
the scan reads z where in_proj wrote them, B, C and the low-rank dt where x_proj wrote them
(dt_proj is formed inside the scan), and the scan's rows go straight into out_proj. The
backward kernels read the same strided rows: no transposed copies, no autograd re-run.
``selective_scan_cpu`` is the (batch, dim, L) op of mamba_ssm's conventions over the same
kernel: it reads u, delta, z (and the backward's dout) through their transposed views,
without copies; only B and C are transposed (they are small).

The kernel computes in float32 (float64 for float64 inputs, used by gradcheck); fp16/bf16
inputs are converted on entry, outputs and gradients go back to each input's dtype. Nothing
but the inputs is saved: the backward recomputes the states block by block.
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .dispatch import cpu_kernel
from .reference import compute_dtype

__all__ = ['mamba_inner_channels_last', 'selective_scan_channels_last',
           'causal_conv1d_channels_last', 'selective_scan_cpu']


def _rows(t, dtype, unit=True):
    """``t`` in ``dtype``; with ``unit``, with stride 1 along its last dim (copied only when
    needed). The scan reads u, delta, z and dout along any strides (``unit=False``)."""
    if t is None:
        return None
    t = t.to(dtype)
    return t if not unit or t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _bc(M, dtype):
    """B or C rows as (batch, L, G, N) for the kernel (G = 1 for (batch, L, N))."""
    return _rows(M.unsqueeze(2) if M.dim() == 3 else M, dtype)


def _cast(grad, like):
    return None if grad is None or like is None else grad.to(like.dtype)


class SelectiveScanRowsFn(torch.autograd.Function):

    @staticmethod
    def _args(u, delta, A, B, C, D, z, delta_bias, delta_softplus, weight):
        cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias, weight)
        vec = (lambda v: None if v is None else v.to(cd).contiguous())
        return (_rows(u, cd, False), _rows(delta, cd, False), A.to(cd), _bc(B, cd), _bc(C, cd),
                vec(D), _rows(z, cd, False), vec(delta_bias), bool(delta_softplus), vec(weight))

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, weight):
        args = SelectiveScanRowsFn._args(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                         weight)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, weight)
        return cpu_kernel().scan_fwd(*args).to(u.dtype)              # (batch, L, dim)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, weight = saved = ctx.saved_tensors
        args = SelectiveScanRowsFn._args(*saved[:8], ctx.delta_softplus, weight)
        du, ddelta, dA, dB, dC, dD, dz, dbias = cpu_kernel().scan_bwd(
            *args, _rows(dout, args[0].dtype, False))
        dweight = None
        if weight is not None:  # delta = dt @ weight^T, dt: (batch, L, R)
            dt, w = args[1], args[9]
            dweight = ddelta.flatten(0, 1).t() @ dt.flatten(0, 1)     # (dim, R)
            ddelta = ddelta @ w                                       # (batch, L, R)
        if B.dim() == 3:
            dB, dC = dB.squeeze(2), dC.squeeze(2)
        return (_cast(du, u), _cast(ddelta, delta), _cast(dA, A), _cast(dB, B), _cast(dC, C),
                _cast(dD, D), _cast(dz, z), _cast(dbias, delta_bias), None,
                _cast(dweight, weight))


def selective_scan_channels_last(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                 delta_softplus=False, delta_proj_weight=None):
    """Selective scan on rows: u, delta, z (batch, L, dim); B, C (batch, L, N) or grouped
    (batch, L, G, N); A (dim, N); D, delta_bias (dim,). Returns (batch, L, dim), contiguous.
    Same math as ``selective_scan``.

    With ``delta_proj_weight`` (dim, R), ``delta`` is the low-rank dt (batch, L, R) and the
    kernel forms ``dt @ delta_proj_weight.T`` per block of channels itself (the mixer's
    dt_proj without writing the (batch, L, dim) delta out)."""
    if A.is_complex():
        raise NotImplementedError('complex A is not supported by the CPU kernel')
    return SelectiveScanRowsFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                     delta_proj_weight)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False):
    """``selective_scan`` in the (batch, dim, L) conventions through the row kernel: u,
    delta, z (batch, dim, L), B, C (batch, N, L) or (batch, G, N, L). Returns a
    (batch, dim, L) view of the kernel's (batch, L, dim) output."""
    def rows(t):  # (batch, k, L) -> (batch, L, k)
        return None if t is None else t.transpose(1, 2)

    def bc(M):    # -> (batch, L, N) or (batch, L, G, N)
        return M.transpose(1, 2) if M.dim() == 3 else M.permute(0, 3, 1, 2)

    out = selective_scan_channels_last(rows(u), rows(delta), A, bc(B), bc(C), D, rows(z),
                                       delta_bias, delta_softplus)
    return out.transpose(1, 2)


class CausalConv1dRowsFn(torch.autograd.Function):

    @staticmethod
    def _args(x, weight, bias, silu):
        cd = compute_dtype(x, weight, bias)
        return (_rows(x, cd), weight.to(cd).contiguous(),
                None if bias is None else bias.to(cd).contiguous(), bool(silu))

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        ctx.silu = bool(silu)
        ctx.save_for_backward(x, weight, bias)
        return cpu_kernel().conv_fwd(*CausalConv1dRowsFn._args(x, weight, bias, silu)).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        args = CausalConv1dRowsFn._args(x, weight, bias, ctx.silu)
        dx, dw, db = cpu_kernel().conv_bwd(*args, _rows(dout, args[0].dtype))
        return _cast(dx, x), _cast(dw, weight), _cast(db, bias), None


def causal_conv1d_channels_last(x, weight, bias=None, silu=False):
    """Depthwise causal conv on rows: x (batch, L, dim), weight (dim, width) or
    (dim, 1, width), bias (dim,). Returns (batch, L, dim); SiLU applied when ``silu``."""
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    return CausalConv1dRowsFn.apply(x, weight, bias, silu)


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
