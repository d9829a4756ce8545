"""Plain float64 loops, the one reference the op tests and the backbone reference share.

Written from the definitions (docs/algorithm.md, mamba_ssm's conventions), independent of
the package code: the scan is a Python loop over the sequence, the conv a sum of explicit
taps. Slow; meant for test-sized inputs. Autograd differentiates them.
"""
import torch

__all__ = ['loop_selective_scan', 'loop_causal_conv1d', 'loop_mamba_inner']


def loop_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t + D u_t, times silu(z_t).

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, N, L) or (batch, G, N, L),
    channel d reading group d // (dim // G); D, delta_bias: (dim,). Returns float64
    (batch, dim, L)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, L = u.shape

    def per_channel(M):  # -> (batch, 1 or dim, N, L), broadcasting over the channels
        if M.dim() == 3:
            return M[:, None]
        return M.repeat_interleave(dim // M.shape[1], dim=1)

    dt = delta + (delta_bias.double()[:, None] if delta_bias is not None else 0)
    if delta_softplus:
        dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))
    # Per-step slices by unbind: autograd then stacks the slice gradients once, instead of
    # a full-size zero-filled gradient per step and slice (slow at L ~ 30 when the
    # full-size tensors are large enough for torch's intra-op threads).
    B_t, C_t = per_channel(B).unbind(-1), per_channel(C).unbind(-1)  # (batch, ., N) each
    dt_t, u_t = dt[..., None].unbind(-2), u[..., None].unbind(-2)    # (batch, dim, 1) each
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(L):
        h = torch.exp(dt_t[t] * A) * h + dt_t[t] * B_t[t] * u_t[t]
        ys.append((h * C_t[t]).sum(-1))                           # (batch, dim)
    y = torch.stack(ys, -1) if ys else torch.zeros_like(u)        # (batch, dim, L)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        zz = z.double()
        y = y * zz * torch.sigmoid(zz)
    return y


def loop_causal_conv1d(x, weight, bias=None, activation=None):
    """out[:, d, t] = act(bias[d] + sum_k w[d, k] x[:, d, t - width + 1 + k]), float64.
    x: (batch, dim, L); weight: (dim, width) or (dim, 1, width)."""
    x = x.double()
    w = weight.double().reshape(weight.shape[0], -1)      # (dim, width)
    width, L = w.shape[1], x.shape[-1]
    out = torch.zeros_like(x)
    for t in range(L):
        for k in range(width):
            src = t - (width - 1) + k
            if src >= 0:
                out[:, :, t] = out[:, :, t] + w[:, k] * x[:, :, src]
    if bias is not None:
        out = out + bias.double()[:, None]
    if activation in ('silu', 'swish'):
        out = out * torch.sigmoid(out)
    return out


def loop_mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                     out_proj_weight, out_proj_bias, A, D, delta_bias, delta_softplus=True):
    """The mixer after in_proj composed from the loops above, float64: xz (batch,
    2 * d_inner, L) -> (batch, L, d_model)."""
    xz = xz.double()
    d_inner = A.shape[0]
    dt_rank, d_state = delta_proj_weight.shape[1], A.shape[1]
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    x = loop_causal_conv1d(x, conv1d_weight, conv1d_bias, 'silu')      # (b, d, L)
    x_dbl = torch.einsum('bdl,ed->ble', x, x_proj_weight.double())     # (b, L, r + 2N)
    dt = x_dbl[..., :dt_rank]
    Bm = x_dbl[..., dt_rank:dt_rank + d_state].transpose(1, 2)          # (b, N, L)
    Cm = x_dbl[..., dt_rank + d_state:].transpose(1, 2)
    delta = torch.einsum('blr,dr->bdl', dt, delta_proj_weight.double())
    y = loop_selective_scan(x, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus)
    out = torch.einsum('bdl,ed->ble', y, out_proj_weight.double())
    return out + out_proj_bias.double() if out_proj_bias is not None else out
