"""Plain PyTorch implementations: the readable reference and the fallback of last resort.

Autograd differentiates them; they run on any device. The scan is a Python loop over the
sequence, so it is slow (about 0.4 s forward and 0.4 s backward per mixer at the backbone's
512x512 size on 2 CPU cores).
"""
import torch
import torch.nn.functional as F

__all__ = ['selective_scan_torch', 'causal_conv1d_torch', 'compute_dtype', 'bc_per_channel']


def compute_dtype(*tensors):
    """float64 if any given tensor is float64, else float32 (fp32 math for fp16/bf16)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def bc_per_channel(M, dim):
    """B or C as (batch, 1 or dim, L, N): (batch, N, L) broadcasts over channels;
    the group form (batch, G, N, L) gives channel d the group d // (dim // G)."""
    if M.dim() == 3:
        return M.unsqueeze(1).transpose(-1, -2)          # (batch, 1, L, N)
    if M.dim() != 4:
        raise ValueError(f'B/C must be (batch, N, L) or (batch, G, N, L), got {tuple(M.shape)}')
    groups = M.shape[1]
    if dim % groups:
        raise ValueError(f'dim {dim} is not divisible by the {groups} B/C groups')
    if groups > 1:
        M = M.repeat_interleave(dim // groups, dim=1)    # (batch, dim, N, L)
    return M.transpose(-1, -2)                           # (batch, 1 or dim, L, N)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                         delta_softplus=False):
    """Selective scan (mamba_ssm conventions) as a loop over L; output in u's dtype."""
    if A.is_complex():
        raise NotImplementedError('complex A is not supported')
    dtype_in = u.dtype
    cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    u, delta, A, B, C = (t.to(cd) for t in (u, delta, A, B, C))
    dim = u.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.to(cd)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bl = bc_per_channel(B, dim)                                  # (batch, 1|dim, L, N)
    Cl = bc_per_channel(C, dim)
    dA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])         # (batch, dim, L, N)
    dBu = (delta * u).unsqueeze(-1) * Bl                         # (batch, dim, L, N)
    h = u.new_zeros(u.shape[0], dim, A.shape[1])                 # (batch, dim, N)
    ys = []
    # unbind (not indexing by t): autograd then stacks the step gradients once instead of
    # scattering each into a zero tensor of the full (batch, dim, L, N) size, which made
    # the backward ~200x slower at L=1361.
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), Cl.unbind(2)):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))                             # (batch, dim)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(u.shape)  # (batch, dim, L)
    if D is not None:
        y = y + D.to(cd)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(cd))
    return y.to(dtype_in)


def causal_conv1d_torch(x, weight, bias=None, activation=None):
    """Depthwise causal conv over L: x (batch, dim, L), weight (dim, width), bias (dim,)."""
    if activation not in (None, 'silu', 'swish'):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    if weight.dim() == 3:                                       # (dim, 1, width) accepted too
        weight = weight.squeeze(1)
    dim, width = weight.shape
    L = x.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1).to(x.dtype),
                   None if bias is None else bias.to(x.dtype),
                   padding=width - 1, groups=dim)[..., :L]      # (batch, dim, L)
    return F.silu(out) if activation is not None else out
