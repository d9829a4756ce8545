"""How backbone cost grows with input size: GlobalMamba-T against Vim-T and ViT-Ti peers.

Every (model, size) is measured in a fresh process (:func:`.child.run_in_child`): batch 1,
eval mode, no grad, random weights and input; ``warmup`` untimed forwards, ``rounds`` timed
ones (:func:`.measure.time_interleaved`, one entry per process), then one forward under
:class:`.measure.PeakMemory` (peak above the built model and its input).

Like with like: every model is timed WITHOUT a feature pyramid, each returning its final
stride-16 map (B, 192, H/16, W/16) after its final norm. GlobalMamba / Vim: ``out_indices``
= the last block, ``pyramid_strides=(16,)``; ViTs: the last layer, ``final_norm=True``.

Models (``MODELS``):

* ``GlobalMamba-T``: frequency-ordered tokens, unidirectional mixers (embed 192, depth 24).
* ``Vim-T``: the same backbone in Vim's raster order with bidirectional mixers.
* ``ViT-Ti``: mmseg's ``VisionTransformer`` at DeiT-Ti width (embed 192, 12 layers,
  3 heads, MLP 4x); its attention is mmcv's ``MultiheadAttention`` (torch's
  ``nn.MultiheadAttention`` on the explicit-softmax path, attention weights formed).
* ``ViT-Ti-SDPA``: the same model with each attention swapped for
  :class:`SDPAAttention` (``F.scaled_dot_product_attention``), same parameters and keys.

mmseg is imported in the child only (by :func:`build_model` of a ViT).
"""
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .child import ChildFailed, run_in_child
from .measure import PeakMemory, sync, time_interleaved

__all__ = ['MODELS', 'MAMBA', 'REFERENCE', 'PATCH', 'parse_size', 'check_models', 'build_model',
           'SDPAAttention', 'use_sdpa', 'measure_forward', 'run_row', 'with_ratios', 'sweep']

MODELS = ('GlobalMamba-T', 'Vim-T', 'ViT-Ti', 'ViT-Ti-SDPA')
MAMBA = MODELS[:2]  # built from mmglobalmamba's backbone; the others from mmseg
REFERENCE = 'GlobalMamba-T'  # the ratios' denominator
PATCH = 16
_TARGET = 'mmglobalmamba.benchmark.resolution:measure_forward'

# Preset widths/depths (overridable, for tests, through build_model's keywords)
_MAMBA_DEFAULTS = dict(embed_dims=192, depth=24)
_VIT_DEFAULTS = dict(embed_dims=192, depth=12, num_heads=3)


# --------------------------------------------------------------------------------------
# Input checks (in the parent, before any process starts)


def parse_size(spec):
    """'1248' -> (1248, 1248), '800x1344' -> (800, 1344); an int is a square, a pair is
    (H, W). Both sides must be positive multiples of the patch size (16)."""
    if isinstance(spec, int):
        hw = (spec, spec)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        hw = tuple(int(s) for s in spec)
    else:
        match = re.fullmatch(r'\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?', str(spec))
        if not match:
            raise ValueError(f'bad input size {spec!r}: write S (a square) or HxW, '
                             'e.g. 1248 or 800x1344')
        hw = (int(match.group(1)), int(match.group(2) or match.group(1)))
    if min(hw) <= 0 or any(s % PATCH for s in hw):
        near = 'x'.join(str(PATCH * max(1, round(s / PATCH))) for s in hw)
        raise ValueError(f'input size {hw[0]}x{hw[1]}: both sides must be positive multiples '
                         f'of the patch size {PATCH} (e.g. {near})')
    return hw


def check_models(names):
    """The names, checked against ``MODELS`` (a clear error names the choices)."""
    names = list(names)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f'unknown model(s) {unknown}: choose from {list(MODELS)}')
    if not names:
        raise ValueError(f'no models given: choose from {list(MODELS)}')
    return names


# --------------------------------------------------------------------------------------
# The ViT's attention through F.scaled_dot_product_attention


class SDPAAttention(nn.Module):
    """Drop-in for mmcv's ``MultiheadAttention`` in mmseg's ViT layers (self-attention,
    no masks): the same ``nn.MultiheadAttention`` parameters (kept as the submodule
    ``attn``, so state-dict keys do not change), attention by
    ``F.scaled_dot_product_attention`` instead of an explicit softmax(QK^T)."""

    def __init__(self, mmcv_attn):
        super().__init__()
        mha = mmcv_attn.attn
        if not isinstance(mha, nn.MultiheadAttention) or not mha._qkv_same_embed_dim:
            raise TypeError('SDPAAttention wraps an mmcv MultiheadAttention over one packed '
                            f'nn.MultiheadAttention, got {type(mha).__name__}')
        if mha.bias_k is not None or mha.add_zero_attn:
            raise TypeError('SDPAAttention does not support add_bias_kv / add_zero_attn')
        self.attn = mha
        self.batch_first = mmcv_attn.batch_first
        self.proj_drop = mmcv_attn.proj_drop
        self.dropout_layer = mmcv_attn.dropout_layer

    def forward(self, query, key=None, value=None, identity=None, attn_mask=None,
                key_padding_mask=None, **kwargs):
        if (key is not None and key is not query) or (value is not None and value is not
                                                       query):
            raise ValueError('SDPAAttention computes self-attention only')
        if attn_mask is not None or key_padding_mask is not None or any(
                v is not None for v in kwargs.values()):
            raise ValueError('SDPAAttention takes no masks or positional encodings')
        identity = query if identity is None else identity
        x = query if self.batch_first else query.transpose(0, 1)  # (B, N, C)
        B, N, C = x.shape
        heads = self.attn.num_heads
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)  # (B, N, 3C)
        q, k, v = qkv.view(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # (B, h, N, c)
        drop = self.attn.dropout if self.training else 0.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, h, N, c)
        out = self.attn.out_proj(out.transpose(1, 2).reshape(B, N, C))  # (B, N, C)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))


def use_sdpa(vit):
    """Swap every layer's attention of an mmseg ``VisionTransformer`` for
    :class:`SDPAAttention`, in place; returns the model."""
    for layer in vit.layers:
        layer.attn = SDPAAttention(layer.attn)
    return vit


# --------------------------------------------------------------------------------------
# Building and measuring (in the child)


def build_model(name, embed_dims=None, depth=None, num_heads=None):
    """Model ``name`` of ``MODELS`` with random weights, in eval mode; it maps images
    (B, 3, H, W) to a tuple holding one stride-16 map (B, D, H/16, W/16). ``embed_dims``,
    ``depth`` and ``num_heads`` (ViTs) override the presets (small models for tests)."""
    check_models([name])
    if name in MAMBA:
        from mmglobalmamba.models.backbones import GlobalMamba
        arch = dict(_MAMBA_DEFAULTS)
        arch.update({k: v for k, v in dict(embed_dims=embed_dims, depth=depth).items()
                     if v is not None})
        raster = name == 'Vim-T'
        model = GlobalMamba(arch=arch, img_size=224, patch_size=PATCH,
                            serialization='raster' if raster else 'frequency',
                            bimamba=raster, if_divide_out=True,
                            out_indices=(arch['depth'] - 1, ), pyramid_strides=(16, ),
                            final_norm=True)
    else:
        from mmseg.models.backbones import VisionTransformer
        cfg = dict(_VIT_DEFAULTS)
        cfg.update({k: v for k, v in dict(embed_dims=embed_dims, depth=depth,
                                          num_heads=num_heads).items() if v is not None})
        model = VisionTransformer(img_size=224, patch_size=PATCH, embed_dims=cfg['embed_dims'],
                                  num_layers=cfg['depth'], num_heads=cfg['num_heads'],
                                  mlp_ratio=4, qkv_bias=True, out_indices=cfg['depth'] - 1,
                                  with_cls_token=True, final_norm=True,
                                  interpolate_mode='bicubic')
        model.init_weights()  # mmseg's own (trunc-normal) init, not all zeros
        if name == 'ViT-Ti-SDPA':
            use_sdpa(model)
    model.eval()  # (mmseg's ViT.train returns None: no chaining)
    return model


def _token_count(model, name, H, W):
    """Patch tokens in the sequence (without the cls token, which every model adds)."""
    if name in MAMBA:
        return sum(h * w for h, w in model.serializer.band_grids(H, W))
    return (H // PATCH) * (W // PATCH)


def _backend(name, device):
    """What computes the model's core op: the scan backend ('cpu', 'cuda', 'torch'), or
    the attention."""
    if name == 'ViT-Ti':
        return 'nn.MultiheadAttention'
    if name == 'ViT-Ti-SDPA':
        return 'F.scaled_dot_product_attention'
    from mmglobalmamba.ops import resolve_backend
    return resolve_backend(device=device)


def measure_forward(model, size, rounds=3, warmup=1, threads=None, device='cpu', seed=0,
                    embed_dims=None, depth=None, num_heads=None):
    """One row: build ``model`` (a name of ``MODELS``), time its forward at ``size``
    ((H, W) or S) with batch 1, and measure its peak memory. Run it in a fresh process
    (:func:`run_row`). Returns seconds per timed round, their median and best, the peak
    (MiB above the model and input), the token count and the output shape."""
    if threads:
        torch.set_num_threads(int(threads))
    H, W = parse_size(size)
    device = torch.device(device)
    torch.manual_seed(seed)
    net = build_model(model, embed_dims=embed_dims, depth=depth, num_heads=num_heads)
    net = net.to(device)
    x = torch.randn(1, 3, H, W, device=device)  # (1, 3, H, W)
    out = []

    def forward():
        with torch.no_grad():
            out[:] = [net(x)[-1]]  # (1, D, H/16, W/16); kept until the next call

    timings = time_interleaved({model: forward}, device=device, rounds=rounds, warmup=warmup)
    shape = list(out[0].shape)
    out.clear()
    with PeakMemory(device) as peak:
        forward()
        sync(device)
        out.clear()
    return dict(model=model, size=[H, W], tokens=_token_count(net, model, H, W),
                times=timings.times[model], median_s=timings.median(model),
                best_s=timings.best(model), peak_mib=peak.peak_mib, peak_exact=peak.exact,
                output_shape=shape, backend=_backend(model, device),
                threads=torch.get_num_threads(), pid=os.getpid(), error=None)


# --------------------------------------------------------------------------------------
# The sweep (in the parent)


def _error_row(model, size, message):
    return dict(model=model, size=list(size), tokens=None, times=[], median_s=None,
                best_s=None, peak_mib=None, peak_exact=None, output_shape=None, backend=None,
                threads=None, pid=None, error=message)


def run_row(model, size, timeout=None, env=None, **kwargs):
    """:func:`measure_forward` in a fresh process. A child that fails (an exception, out
    of memory, killed, past ``timeout`` seconds) gives a row whose ``error`` says why."""
    H, W = parse_size(size)
    try:
        return run_in_child(_TARGET, dict(model=model, size=[H, W], **kwargs), env=env,
                            timeout=timeout)
    except ChildFailed as exc:  # an exception in the child, or past the timeout
        return _error_row(model, (H, W), str(exc))


def with_ratios(rows, reference=REFERENCE):
    """Adds to each row ``time_ratio`` (median / the reference's median at the same size)
    and ``memory_ratio`` (peak / the reference's peak); None where either is missing.
    The rows ran in separate processes, so these are ratios of medians."""
    ref = {tuple(r['size']): r for r in rows if r['model'] == reference and not r['error']}
    for row in rows:
        base = ref.get(tuple(row['size']))
        row['time_ratio'] = row['memory_ratio'] = None
        if base is None or row['error']:
            continue
        row['time_ratio'] = row['median_s'] / base['median_s']
        if row['peak_mib'] is not None and base['peak_mib']:
            row['memory_ratio'] = row['peak_mib'] / base['peak_mib']
    return rows


def sweep(sizes, models=MODELS, rounds=3, warmup=1, threads=None, device='cpu',
          timeout=None, progress=None, **overrides):
    """Rows for every size x model (sizes outer, so one size's rows sit together), each from
    a fresh process, with ratios vs ``REFERENCE``. Sizes and names are checked before any
    process starts. ``progress(row)`` is called after each row; ``overrides``
    (``embed_dims``, ``depth``, ``num_heads``) reach :func:`build_model`."""
    sizes = [parse_size(s) for s in sizes]
    models = check_models(models)
    if rounds < 1 or warmup < 0:
        raise ValueError(f'need rounds >= 1 and warmup >= 0, got {rounds} and {warmup}')
    rows = []
    for size in sizes:
        for model in models:
            row = run_row(model, size, timeout=timeout, rounds=rounds, warmup=warmup,
                          threads=threads, device=str(device), **overrides)
            rows.append(row)
            if progress is not None:
                progress(row)
    return with_ratios(rows)

