"""Parameters and FLOPs of GlobalMamba backbones and of full mmseg / mmdet models.

Built on mmengine's ``FlopAnalyzer`` (a jit trace of one forward pass) with two additions:

* **Selective scan.** The scan runs in a compiled kernel or a Python loop, neither of which
  the trace can see into. While analysing, :func:`traceable_scan` routes the scan through a
  ``torch.library`` custom op, ``mmglobalmamba_analysis::selective_scan`` (one trace node
  whose implementation calls the real scan), counted by :func:`selective_scan_flops`.
* **Batched matmul.** mmengine's ``aten::matmul`` handler drops the batch dimensions of its
  second operand (``(r, H) @ (B, C, H, W)`` is counted as ``r*H*W``). The DCT of the
  frequency serializer (``dct_2d`` / ``idct_2d``) is exactly such a product, so
  :func:`matmul_flop_jit` replaces it with a broadcasting count.

Convention (mmengine / fvcore): **one multiply-add = 1 FLOP**; a lone multiply, add, exp or
softplus is also 1. Element-wise ops outside the scan (RMSNorm, SiLU, GELU, residual adds,
position-embedding add, max-pool) are not counted, as mmengine does not count them; norms
with a handler (LayerNorm: 5 per element, BatchNorm in eval: 2 per element) are. Convolution
bias is not counted. mmengine counts the depthwise causal conv1d on its padded output,
``B * d_inner * width * (L + width - 1)``.

Selective-scan FLOPs per call (``u`` of shape (B, D, L), ``A`` of shape (D, N)), per state
element (b, d, l, n): ``exp(dt*A)`` 2 (multiply, exp), ``(dt*u)*B`` 1, ``h = dA*h + dBu`` 1
(a multiply-add), ``y += C*h`` 1 (a multiply-add): **5 B D L N**. Per (b, d, l): ``dt*u`` 1,
plus ``delta + delta_bias`` 1, softplus 1, ``+ D*u`` 1 (multiply-add), gate ``* silu(z)`` 2,
each when present: up to **6 B D L** more.
"""
import contextlib
import math
import warnings
from collections import Counter
from typing import Optional

import torch

__all__ = [
    'SCAN_OP', 'selective_scan_flops', 'selective_scan_flop_jit', 'matmul_flop_jit',
    'FLOP_HANDLES', 'traceable_scan', 'analyze_complexity', 'classifier_param_count',
    'format_count'
]

SCAN_OP = 'mmglobalmamba_analysis::selective_scan'


def selective_scan_flops(batch, dim, length, d_state, with_D=True, with_z=True,
                         with_delta_bias=True, delta_softplus=True):
    """FLOPs of one selective scan (module docstring has the breakdown)."""
    per_token = 1 + int(with_delta_bias) + int(delta_softplus) + int(with_D) + 2 * int(with_z)
    return batch * dim * length * (5 * d_state + per_token)


def _shape(value):
    """Static shape of a traced tensor value, or None (an absent optional argument)."""
    try:
        return value.type().sizes()
    except Exception:  # NoneType and other non-tensor values
        return None


def _ivalue(value):
    try:
        return value.toIValue()
    except Exception:
        return None


def selective_scan_flop_jit(inputs, outputs):
    """Handle for the ``mmglobalmamba_analysis::selective_scan`` trace node, whose
    arguments are (u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)."""
    batch, dim, length = _shape(inputs[0])
    d_state = _shape(inputs[2])[1]
    return Counter({'selective_scan': selective_scan_flops(
        batch, dim, length, d_state, with_D=_shape(inputs[5]) is not None,
        with_z=_shape(inputs[6]) is not None, with_delta_bias=_shape(inputs[7]) is not None,
        delta_softplus=bool(_ivalue(inputs[8])))})


def _rows_scan_flop_jit(inputs, outputs):
    """Handle for the CPU route's scan, ``SelectiveScanRowsFn`` (traced as
    ``prim::PythonOp``; only its tensor arguments are visible), as the mixer calls it: u
    (batch, L, dim), the low-rank dt (batch, L, R), A, B, C, D, z, delta_bias and the
    dt_proj weight (dim, R), softplus on. The scan counts as in the composed route; the
    dt_proj product the kernel forms itself counts as the 'linear' it replaces."""
    batch, length, dim = _shape(inputs[0])
    d_state = _shape(inputs[2])[1]
    rank = _shape(inputs[1])[-1]
    flops = Counter({'selective_scan': selective_scan_flops(batch, dim, length, d_state)})
    if rank != dim:  # dt_proj folded into the kernel
        flops['linear'] = batch * length * rank * dim
    return flops


def _rows_conv_flop_jit(inputs, outputs):
    """Handle for the CPU route's depthwise causal conv, ``CausalConv1dRowsFn`` (x
    (batch, L, dim), weight (dim, width)), counted as mmengine counts the composed route's
    padded ``F.conv1d``: ``batch * dim * width * (L + width - 1)``."""
    batch, length, dim = _shape(inputs[0])
    width = _shape(inputs[1])[-1]
    return Counter({'conv': batch * dim * width * (length + width - 1)})


def matmul_flop_jit(inputs, outputs):
    """``aten::matmul`` with numpy broadcasting: prod(batch dims) * n * k * m."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    a = [1] + list(a) if len(a) == 1 else list(a)
    b = list(b) + [1] if len(b) == 1 else list(b)
    assert a[-1] == b[-2], (a, b)
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


FLOP_HANDLES = {
    SCAN_OP: selective_scan_flop_jit,
    'aten::matmul': matmul_flop_jit,
    'prim::PythonOp.SelectiveScanRowsFn': _rows_scan_flop_jit,
    'prim::PythonOp.CausalConv1dRowsFn': _rows_conv_flop_jit,
}

# ----------------------------------------------------------------------------------------
# The scan as one trace node

_scan_op = None


def _get_scan_op():
    """The custom op (defined once) whose implementation is the real selective scan on
    the backend named by its last argument."""
    global _scan_op
    if _scan_op is None:
        from mmglobalmamba.ops import selective_scan

        @torch.library.custom_op(SCAN_OP, mutates_args=())
        def _scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                  C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                  delta_bias: Optional[torch.Tensor], delta_softplus: bool,
                  backend: str) -> torch.Tensor:
            return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                  backend=backend)

        _scan_op = _scan
    return _scan_op


@contextlib.contextmanager
def traceable_scan(backend=None):
    """Inside: every mixer's selective scan is one ``SCAN_OP`` trace node (through
    ``ops.scan_substitute``), whose implementation runs the real scan on ``backend``
    (default: the CPU kernel if built, else the PyTorch reference)."""
    from mmglobalmamba.ops import available_backends, scan_substitute
    if backend is None:
        backend = 'cpu' if 'cpu' in available_backends() else 'torch'
    op = _get_scan_op()

    def counted_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        return op(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), backend)

    with scan_substitute(counted_scan):
        yield


# ----------------------------------------------------------------------------------------
# Analysis


def _count_mixers(model):
    from mmglobalmamba.models.layers import MambaMixer
    return sum((2 if m.bimamba else 1) for m in model.modules() if isinstance(m, MambaMixer))


def analyze_complexity(model, inputs, backend=None, scan_node=True):
    """Params and FLOPs of ``model(*inputs)`` (one forward, eval mode, no grad).

    Args:
        model (nn.Module): any model; GlobalMamba scans are counted wherever they are.
        inputs (tuple): positional inputs of ``model.forward``.
        backend (str | None): scan backend of the traced forward: 'cpu' or 'torch'
            (default: 'cpu' if built, else 'torch').
        scan_node (bool): trace each scan as one ``SCAN_OP`` node (:func:`traceable_scan`,
            the default); False traces the route ``backend`` really takes (on 'cpu' the
            channels-last kernels, counted by their ``prim::PythonOp`` handles). Both
            give the same count.

    Returns:
        dict: ``params`` (int), ``flops`` (int), ``flops_by_module`` (Counter: module
        name -> FLOPs, '' is the whole model), ``params_by_module``,
        ``flops_by_operator`` (Counter), ``skipped_ops`` (Counter of op kinds without a
        FLOP handle, e.g. element-wise ones), ``analyzer`` (the FlopAnalyzer).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    from mmglobalmamba.ops import scan_backend
    was_training = model.training
    model.eval()
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    try:
        route = traceable_scan(backend) if scan_node else scan_backend(backend)
        with torch.no_grad(), route, warnings.catch_warnings():
            warnings.simplefilter('ignore')
            total = analyzer.total()  # traces now, while the scan is a single node
            by_module = analyzer.by_module()
            by_op = analyzer.by_operator()
            skipped = analyzer.unsupported_ops()
    finally:
        model.train(was_training)
    expected = _count_mixers(model)
    if expected and not by_op.get('selective_scan'):
        warnings.warn(f'{expected} selective scans were expected but none was counted: the '
                      'FLOP count misses the scans (has mamba_inner changed?)')
    params = parameter_count(model)
    return dict(params=params[''], flops=total, flops_by_module=by_module,
                params_by_module=params, flops_by_operator=by_op, skipped_ops=skipped,
                analyzer=analyzer)


def classifier_param_count(backbone, num_classes=1000):
    """Params of the released-style classifier with this backbone's encoder: patch
    embedding, cls, pos_embed at the pretraining size, blocks, norm_f and a linear head
    (D -> num_classes); the dense-prediction extras (out norms, pyramid) left out."""
    skip = ('out_norms.', 'pyramid.')
    n = sum(p.numel() for name, p in backbone.named_parameters() if not name.startswith(skip))
    return n + backbone.embed_dims * num_classes + num_classes


def format_count(n, unit='M', digits=2):
    """12345678 -> '12.35M' ('K', 'M', 'G' or 'T')."""
    scale = {'K': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12}[unit]
    return f'{n / scale:.{digits}f}{unit}'
