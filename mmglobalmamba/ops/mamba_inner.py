"""``mamba_inner``: the whole Mamba-1 mixer after ``in_proj`` (mamba_ssm's ``mamba_inner_fn``)."""
import torch.nn.functional as F

from .causal_conv1d import causal_conv1d
from .channels_last import mamba_inner_channels_last
from .dispatch import active_scan_substitute, mamba_ssm_interface, resolve_backend
from .selective_scan import selective_scan

__all__ = ['mamba_inner', 'mamba_inner_composed']


def mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                out_proj_weight, out_proj_bias, A, D=None, delta_bias=None,
                delta_softplus=True, backend=None):
    """conv1d + SiLU, x_proj, dt_proj, selective scan gated by silu(z), out_proj.

    Args:
        xz: (batch, 2 * d_inner, L), the in_proj output with x first, z second.
        conv1d_weight: (d_inner, width) or (d_inner, 1, width); conv1d_bias: (d_inner,).
        x_proj_weight: (dt_rank + 2 * d_state, d_inner) -> [dt | B | C].
        delta_proj_weight: (d_inner, dt_rank), applied without bias (the dt_proj bias is
            passed as ``delta_bias``).
        out_proj_weight: (d_model, d_inner); out_proj_bias: (d_model,) or None.
        A: (d_inner, d_state); D, delta_bias: (d_inner,).
        backend: 'cuda' calls mamba_ssm's fused ``mamba_inner_fn``; 'cpu' runs the
            channels-last kernels on the rows of ``xz.transpose(1, 2)`` (no transposed
            copies when xz is a transposed in_proj output); 'torch' composes the pieces,
            as does any backend inside ``dispatch.scan_substitute`` (conv as F.conv1d).
    Returns (batch, L, d_model).
    """
    batch, two_d, L = xz.shape
    d_inner = two_d // 2
    if two_d != 2 * d_inner or A.shape[0] != d_inner:
        raise ValueError(f'xz must be (batch, 2 * d_inner, L) with d_inner = A.shape[0] = '
                         f'{A.shape[0]}, got {tuple(xz.shape)}')
    d_state = A.shape[1]
    dt_rank = delta_proj_weight.shape[1]
    if x_proj_weight.shape != (dt_rank + 2 * d_state, d_inner):
        raise ValueError(f'x_proj_weight must be (dt_rank + 2 * d_state, d_inner) = '
                         f'{(dt_rank + 2 * d_state, d_inner)}, got {tuple(x_proj_weight.shape)}')
    if active_scan_substitute() is not None:  # every scan must reach the substitute
        return mamba_inner_composed(xz, conv1d_weight, conv1d_bias, x_proj_weight,
                                    delta_proj_weight, out_proj_weight, out_proj_bias, A, D,
                                    delta_bias, delta_softplus, backend='torch')
    name = resolve_backend(backend, xz.device, 'mamba_inner')
    if name == 'cuda':
        w = conv1d_weight if conv1d_weight.dim() == 3 else conv1d_weight.unsqueeze(1)
        # The bias is added here, not passed on: mamba_ssm (2.3.2 and earlier) sums the
        # already flattened (d_model, batch * L) gradient over both dims and returns a
        # scalar as its gradient, which autograd rejects.
        out = mamba_ssm_interface().mamba_inner_fn(
            xz, w, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
            None, A, D=D, delta_bias=delta_bias, delta_softplus=delta_softplus)
        return out if out_proj_bias is None else out + out_proj_bias

    if name == 'cpu':
        return mamba_inner_channels_last(
            xz.transpose(1, 2), conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
            out_proj_weight, out_proj_bias, A, D=D, delta_bias=delta_bias,
            delta_softplus=delta_softplus)

    return mamba_inner_composed(xz, conv1d_weight, conv1d_bias, x_proj_weight,
                                delta_proj_weight, out_proj_weight, out_proj_bias, A, D,
                                delta_bias, delta_softplus, backend=name)


def mamba_inner_composed(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                         out_proj_weight, out_proj_bias, A, D=None, delta_bias=None,
                         delta_softplus=True, backend=None):
    """The mixer from its separate ops in the (batch, dim, L) layout: the 'torch' route, and
    the one taken inside ``dispatch.scan_substitute`` (FLOP counting, ONNX export). Same arguments and result
    as :func:`mamba_inner`."""
    batch, _, L = xz.shape
    d_inner, d_state = A.shape
    dt_rank = delta_proj_weight.shape[1]
    x, z = xz.chunk(2, dim=1)                                           # (batch, d_inner, L)
    x = causal_conv1d(x, conv1d_weight, conv1d_bias, 'silu', backend=backend)
    x_dbl = F.linear(x.transpose(1, 2).reshape(batch * L, d_inner), x_proj_weight)
    dt, B, C = x_dbl.split([dt_rank, d_state, d_state], dim=-1)         # (batch * L, .)
    delta = F.linear(dt, delta_proj_weight)                             # (batch * L, d_inner)
    delta = delta.view(batch, L, d_inner).transpose(1, 2)               # (batch, d_inner, L)
    B = B.reshape(batch, L, d_state).transpose(1, 2)                    # (batch, d_state, L)
    C = C.reshape(batch, L, d_state).transpose(1, 2)
    y = selective_scan(x, delta, A, B, C, D, z, delta_bias, delta_softplus, backend=backend)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)  # (batch, L, d_model)
