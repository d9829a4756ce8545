"""``selective_scan``: the Mamba-1 S6 scan, dispatched to the best available backend."""
from .channels_last import selective_scan_cpu
from .dispatch import (active_scan_substitute, mamba_ssm_interface, resolve_backend,
                       scan_substitute)
from .reference import selective_scan_torch

__all__ = ['selective_scan']


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f'u must be (batch, dim, L), got {tuple(u.shape)}')
    batch, dim, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f'delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}')
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'A must be (dim={dim}, N), got {tuple(A.shape)}')
    N = A.shape[1]
    for name, M in (('B', B), ('C', C)):
        ok = (M.dim() == 3 and tuple(M.shape) == (batch, N, L)) or (
            M.dim() == 4 and M.shape[0] == batch and M.shape[2:] == (N, L)
            and M.shape[1] >= 1 and dim % M.shape[1] == 0)
        if not ok:
            raise ValueError(f'{name} must be (batch, N, L) = {(batch, N, L)} or '
                             f'(batch, G, N, L) with G dividing dim, got {tuple(M.shape)}')
    for name, v in (('D', D), ('delta_bias', delta_bias)):
        if v is not None and tuple(v.shape) != (dim, ):
            raise ValueError(f'{name} must be (dim,) = ({dim},), got {tuple(v.shape)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'z must match u {tuple(u.shape)}, got {tuple(z.shape)}')


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend=None):
    """Selective scan in mamba_ssm's ``selective_scan_fn`` conventions.

    Args:
        u, delta, z: (batch, dim, L). A: (dim, N), real.
        B, C: (batch, N, L) or grouped (batch, G, N, L). D, delta_bias: (dim,).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        backend: ``'cuda'``, ``'cpu'``, ``'torch'`` or None/``'auto'`` (see ``dispatch``);
            inside ``dispatch.scan_substitute(fn)``, ``fn`` runs instead.

    Computes ``dt = softplus?(delta + delta_bias)``,
    ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``, ``y_t = <C_t, h_t> + D u_t`` and, with z,
    ``y * silu(z)``, in fp32 (fp64 for fp64 inputs). Returns (batch, dim, L) in u's dtype.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    substitute = active_scan_substitute()
    if substitute is not None:  # a tracer's stand-in (see dispatch.scan_substitute)
        with scan_substitute(None):
            return substitute(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    name = resolve_backend(backend, u.device, 'selective_scan')
    if name == 'cuda':
        return mamba_ssm_interface().selective_scan_fn(u, delta, A, B, C, D, z, delta_bias,
                                                       delta_softplus)
    if name == 'cpu':
        return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
