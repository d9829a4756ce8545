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
import importlib
import math
import warnings
from collections import Counter
from typing import Optional

import torch
import torch.nn as nn

__all__ = [
    'SCAN_OP', 'selective_scan_flops', 'selective_scan_flop_jit', 'matmul_flop_jit',
    'FLOP_HANDLES', 'traceable_scan', 'analyze_complexity', 'build_backbone',
    'build_model_from_config', 'model_inputs', 'classifier_param_count', 'format_count'
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
    arguments are (u, delta, A, B, C, D, z, delta_bias, delta_softplus)."""
    batch, dim, length = _shape(inputs[0])
    d_state = _shape(inputs[2])[1]
    return Counter({'selective_scan': selective_scan_flops(
        batch, dim, length, d_state, with_D=_shape(inputs[5]) is not None,
        with_z=_shape(inputs[6]) is not None, with_delta_bias=_shape(inputs[7]) is not None,
        delta_softplus=bool(_ivalue(inputs[8])))})


def _python_scan_flop_jit(inputs, outputs):
    """Handle for an autograd-Function scan traced as ``prim::PythonOp`` (our CPU kernel's
    ``SelectiveScanCPUFn``, mamba_ssm's ``SelectiveScanFn``) when :func:`traceable_scan`
    is not used. Only tensor arguments are visible there: (u, delta, A, B, C, D?, z?,
    delta_bias?) taken in that order, with softplus assumed (as in every Mamba mixer)."""
    batch, dim, length = _shape(inputs[0])
    d_state = _shape(inputs[2])[1]
    extra = len([v for v in inputs[5:8] if _shape(v) is not None])
    return Counter({'selective_scan': selective_scan_flops(
        batch, dim, length, d_state, with_D=extra >= 1, with_z=extra >= 2,
        with_delta_bias=extra >= 3, delta_softplus=True)})


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
    'prim::PythonOp.SelectiveScanCPUFn': _python_scan_flop_jit,
    'prim::PythonOp.SelectiveScanFn': _python_scan_flop_jit,
}

# ----------------------------------------------------------------------------------------
# The scan as one trace node

_scan_op = None


def _get_scan_op():
    """Define (once) the custom op whose implementation is the real selective scan."""
    global _scan_op
    if _scan_op is None:
        from mmglobalmamba.ops import selective_scan

        @torch.library.custom_op(SCAN_OP, mutates_args=())
        def _scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                  C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                  delta_bias: Optional[torch.Tensor], delta_softplus: bool) -> torch.Tensor:
            return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

        _scan_op = _scan
    return _scan_op


def _composed_backend(device='cpu'):
    """The fastest backend that runs ``mamba_inner`` as separate ops on ``device``: the
    CPU kernel on CPU if built, else the PyTorch reference (also on CUDA, where the
    'cuda' backend would fuse the whole mixer into one opaque call)."""
    from mmglobalmamba.ops import available_backends
    if torch.device(device).type == 'cpu' and 'cpu' in available_backends():
        return 'cpu'
    return 'torch'


@contextlib.contextmanager
def traceable_scan(backend=None, device='cpu'):
    """Inside: the mixers' selective scan is one ``SCAN_OP`` trace node, and the scan and
    conv run on ``backend`` (default: the CPU kernel if built, else PyTorch) through the
    composed (batch, dim, L) route, so that neither the fused CUDA ``mamba_inner`` nor the
    channels-last CPU kernels (both opaque to the trace) are taken. It swaps module
    attributes of ``mmglobalmamba.ops.mamba_inner`` while active: not thread-safe."""
    from mmglobalmamba.ops import scan_backend
    inner = importlib.import_module('mmglobalmamba.ops.mamba_inner')
    op = _get_scan_op()
    original = inner.selective_scan

    def counted_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                     delta_softplus=False, backend=None):
        return op(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))

    def composed_mixer(xz_rows, *args, **kwargs):  # instead of the channels-last kernels
        return inner.mamba_inner_composed(xz_rows.transpose(1, 2), *args, **kwargs,
                                          backend='cpu')

    original_cl = inner.mamba_inner_channels_last
    inner.selective_scan = counted_scan
    inner.mamba_inner_channels_last = composed_mixer
    try:
        with scan_backend(backend or _composed_backend(device)):
            yield
    finally:
        inner.selective_scan = original
        inner.mamba_inner_channels_last = original_cl


# ----------------------------------------------------------------------------------------
# Analysis


def _count_mixers(model):
    from mmglobalmamba.models.layers import MambaMixer
    return sum((2 if m.bimamba else 1) for m in model.modules() if isinstance(m, MambaMixer))


def analyze_complexity(model, inputs, backend=None):
    """Params and FLOPs of ``model(*inputs)`` (one forward, eval mode, no grad).

    Args:
        model (nn.Module): any model; GlobalMamba scans are counted wherever they are.
        inputs (tuple): positional inputs of ``model.forward``.
        backend (str | None): scan backend of the traced forward: 'cpu' or 'torch'
            (default: 'cpu' for CPU models if built, else 'torch'). The count does not
            depend on it.

    Returns:
        dict: ``params`` (int), ``flops`` (int), ``flops_by_module`` (Counter: module
        name -> FLOPs, '' is the whole model), ``params_by_module``,
        ``flops_by_operator`` (Counter), ``skipped_ops`` (Counter of op kinds without a
        FLOP handle, e.g. element-wise ones), ``analyzer`` (the FlopAnalyzer).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    model.eval()
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    try:
        with torch.no_grad(), traceable_scan(backend, device), warnings.catch_warnings():
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


# ----------------------------------------------------------------------------------------
# Building what to analyse


def build_backbone(arch='tiny', **kwargs):
    """A GlobalMamba backbone as the configs use it (4 outputs, strides 4-32), random
    weights; ``kwargs`` override the constructor arguments."""
    from mmglobalmamba.models import GlobalMamba
    cfg = dict(arch=arch, img_size=224, out_indices=(5, 11, 17, 23),
               pyramid_strides=(4, 8, 16, 32), norm_cfg=dict(type='BN', requires_grad=True))
    if isinstance(arch, dict):
        depth = arch['depth']
        cfg['out_indices'] = tuple(depth * (i + 1) // 4 - 1 for i in range(4))
    cfg.update(kwargs)
    return GlobalMamba(**cfg)


def build_model_from_config(config, cfg_options=None):
    """Build ``config`` (a path or a ``Config``)'s model on CPU with random weights
    (pretrained init dropped, SyncBN as BN), in eval mode. Returns (model, task) with task
    'seg' (mmseg) or 'det' (mmdet)."""
    from mmengine.config import Config

    from mmglobalmamba.engine.config import build_model_on_cpu, config_scope
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model_on_cpu(cfg, pretrained=False)
    return model.eval(), 'seg' if config_scope(cfg) == 'mmseg' else 'det'


class _TensorForward(nn.Module):
    """Calls ``model(inputs, data_samples, mode='tensor')`` with fixed data samples, so the
    traced input is one tensor. Attribute ``model`` keeps the module names readable."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self._samples = data_samples

    def forward(self, inputs):
        out = self.model(inputs, self._samples, mode='tensor')
        return tuple(out) if isinstance(out, (list, tuple)) else out


def model_inputs(model, task, shape, batch=1):
    """(module to trace, inputs) for a full model at image ``shape`` (H, W): mmseg's and
    mmdet's 'tensor' mode (backbone, neck, heads; mmdet's RoI head on the RPN proposals)."""
    H, W = shape
    x = torch.randn(batch, 3, H, W)
    if task == 'seg':
        return _TensorForward(model, None), (x, )
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                batch_input_shape=(H, W), scale_factor=(1.0, 1.0))
    samples = []
    for _ in range(batch):
        sample = DetDataSample()
        sample.set_metainfo(meta)
        samples.append(sample)
    return _TensorForward(model, samples), (x, )
