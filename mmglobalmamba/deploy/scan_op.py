"""The torch side of the ONNX scan: a placeholder op the exporter keeps as one node.

Inside :func:`onnx_scan_substitute` every mixer's scan becomes the elementwise prologue and
epilogue (softplus, ``D u``, the ``silu(z)`` gate), which export as ordinary ops, around one
call of the custom op ``mmglobalmamba_deploy::ssm_recurrence``: the bare recurrence
``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t``, ``y_t = <C_t, h_t>``. The exporter translates
that op into a placeholder node (:data:`PLACEHOLDER_DOMAIN`) carrying the static sizes, and
:func:`mmglobalmamba.deploy.onnx_scan.expand_placeholders` replaces it by the Scan graph.

The op works in the (batch, L, channels) layout the mixer's projections produce, so the
transposes around it cancel in the exported graph.
"""
import torch
import torch.nn.functional as F

from mmglobalmamba.ops import scan_substitute
from mmglobalmamba.ops.reference import selective_scan_torch
from .onnx_scan import PLACEHOLDER_DOMAIN, PLACEHOLDER_OP

__all__ = ['ssm_recurrence', 'onnx_selective_scan', 'onnx_scan_substitute',
           'translation_table']


@torch.library.custom_op('mmglobalmamba_deploy::ssm_recurrence', mutates_args=())
def ssm_recurrence(dt: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor) -> torch.Tensor:
    """y (batch, L, d) of the recurrence; dt, x: (batch, L, d), A: (d, N),
    B, C: (batch, L, N, G) with G = 1 or d. Eager: the PyTorch reference loop."""
    to_bgnl = (0, 3, 2, 1)                                   # (batch, G, N, L)
    y = selective_scan_torch(x.transpose(1, 2), dt.transpose(1, 2), A,
                             B.permute(*to_bgnl), C.permute(*to_bgnl))
    return y.transpose(1, 2).contiguous()


@ssm_recurrence.register_fake
def _ssm_recurrence_fake(dt, x, A, B, C):
    return torch.empty_like(x)


def _channels_last_bc(M, dim):
    """B or C from the scan's (batch, N, L) or grouped (batch, G, N, L) form to
    (batch, L, N, G') with G' = 1 (shared) or dim (per channel)."""
    if M.dim() == 3:
        return M.transpose(1, 2).unsqueeze(-1)               # (batch, L, N, 1)
    groups = M.shape[1]
    if groups == 1:
        return M[:, 0].transpose(1, 2).unsqueeze(-1)
    if groups != dim:
        M = M.repeat_interleave(dim // groups, dim=1)        # (batch, dim, N, L)
    return M.permute(0, 3, 2, 1)                             # (batch, L, N, dim)


def _softplus(x):
    """softplus as max(x, 0) + log(1 + exp(-|x|)): the same values as F.softplus (its
    threshold 20 included, to fp32 rounding) from ops ORT vectorizes (its Softplus kernel
    took 10 ms per mixer at 512x512, the Exp and Log here take a fraction)."""
    return F.relu(x) + torch.log(1 + torch.exp(-x.abs()))


def onnx_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False):
    """``selective_scan`` (same arguments and result, fp32) with the recurrence as the
    placeholder op: what :func:`onnx_scan_substitute` puts in place."""
    if A.is_complex():
        raise NotImplementedError('complex A cannot be exported')
    dim = u.shape[1]
    x = u.transpose(1, 2).float()                            # (batch, L, d)
    dt = delta.transpose(1, 2).float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = _softplus(dt)
    y = ssm_recurrence(dt, x, A.float(), _channels_last_bc(B.float(), dim),
                       _channels_last_bc(C.float(), dim))    # (batch, L, d)
    if D is not None:
        y = y + x * D.float()
    if z is not None:
        y = y * F.silu(z.transpose(1, 2).float())
    return y.transpose(1, 2).to(u.dtype)                     # (batch, d, L)


def onnx_scan_substitute():
    """``with onnx_scan_substitute():`` every scan of a forward runs as
    :func:`onnx_selective_scan` (see ``mmglobalmamba.ops.scan_substitute``)."""
    return scan_substitute(onnx_selective_scan)


def _static(value, what):
    dims = []
    for dim in value.shape:
        if not isinstance(dim, int):
            raise ValueError(f'the scan {what} has a dynamic size {dim} ({value.shape}); the '
                             'export needs static shapes (the band grids depend on H and W)')
        dims.append(dim)
    return dims


def _placeholder_schema():
    """The placeholder's OpSchema (onnxscript builds nodes from schemas): five float
    tensors in, one out, the static sizes as int attributes."""
    from onnx.defs import OpSchema
    param = OpSchema.FormalParameter
    attr = OpSchema.Attribute
    return OpSchema(
        PLACEHOLDER_OP, PLACEHOLDER_DOMAIN, 1,
        doc='selective-scan recurrence, expanded into a Scan graph after export',
        inputs=[param(name, 'T') for name in ('dt', 'x', 'A', 'B', 'C')],
        outputs=[param('y', 'T')],
        type_constraints=[('T', ['tensor(float)'], 'float32')],
        attributes=[attr(name, OpSchema.AttrType.INT, '')
                    for name in ('batch', 'length', 'dim', 'd_state', 'groups')])


def _translate_ssm_recurrence(dt, x, A, B, C):
    """onnxscript translation: one placeholder node with the static sizes as attributes."""
    import onnxscript
    placeholder = onnxscript.values.Op(onnxscript.values.Opset(PLACEHOLDER_DOMAIN, 1),
                                       PLACEHOLDER_OP, _placeholder_schema())
    batch, length, dim = _static(dt, 'dt')
    d_state, groups = _static(B, 'B')[2:]
    return placeholder(dt, x, A, B, C, batch=batch, length=length, dim=dim,
                       d_state=d_state, groups=groups)


def translation_table():
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    return {torch.ops.mmglobalmamba_deploy.ssm_recurrence.default: _translate_ssm_recurrence}
