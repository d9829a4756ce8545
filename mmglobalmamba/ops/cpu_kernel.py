"""Autograd wrapper around the compiled CPU selective scan (``mmglobalmamba._C``).

The kernel computes in float32 (float64 for float64 inputs, used by gradcheck); fp16/bf16
inputs are converted on entry and outputs/gradients go back to each input's dtype.
B and C are handed over as (batch, G, L, N) so the kernel's state loop is contiguous.
Nothing is saved from the forward but the inputs: the backward recomputes the states.
"""
import torch
from torch.autograd.function import once_differentiable

from .dispatch import cpu_kernel
from .reference import compute_dtype

__all__ = ['selective_scan_cpu', 'selective_scan_cpu_backward']


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    """Kernel-ready contiguous copies in the compute dtype."""
    cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias)

    def conv(t):
        return None if t is None else t.to(cd).contiguous()

    def bc(M):
        if M.dim() == 3:
            M = M.unsqueeze(1)                         # (batch, 1, N, L)
        return M.to(cd).transpose(-1, -2).contiguous()  # (batch, G, L, N)

    return (conv(u), conv(delta), conv(A), bc(B), bc(C), conv(D), conv(z), conv(delta_bias))


class SelectiveScanCPUFn(torch.autograd.Function):
    """Fused forward and backward of the selective scan on CPU."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        kernel = cpu_kernel()
        args = _prepare(u, delta, A, B, C, D, z, delta_bias)
        out = kernel.selective_scan_fwd(*args, bool(delta_softplus))  # (batch, dim, L)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        return out.to(u.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        grads = selective_scan_cpu_backward(*ctx.saved_tensors, dout, ctx.delta_softplus)
        return (*grads, None)


def selective_scan_cpu_backward(u, delta, A, B, C, D, z, delta_bias, dout, delta_softplus):
    """Gradients of the scan for (u, delta, A, B, C, D, z, delta_bias) from the kernel's
    backward, each in its input's shape and dtype (None for an absent input). Inputs in
    the (batch, dim, L) conventions; any strides (they are copied to the kernel layout)."""
    args = _prepare(u, delta, A, B, C, D, z, delta_bias)
    dout = dout.to(args[0].dtype).contiguous()
    du, ddelta, dA, dB, dC, dD, dz, dbias = cpu_kernel().selective_scan_bwd(
        *args, dout, bool(delta_softplus))

    def back_bc(grad, M):  # (batch, G, L, N) -> M's shape and dtype
        return grad.transpose(-1, -2).reshape(M.shape).to(M.dtype)

    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), back_bc(dB, B),
            back_bc(dC, C), None if D is None else dD.to(D.dtype),
            None if z is None else dz.to(z.dtype),
            None if delta_bias is None else dbias.to(delta_bias.dtype))


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False):
    """Selective scan through the compiled CPU kernel (same contract as the reference)."""
    if A.is_complex():
        raise NotImplementedError('complex A is not supported by the CPU kernel')
    return SelectiveScanCPUFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
