"""GlobalMamba: Vision Mamba over a frequency-ordered token sequence, for dense prediction.

Data flows one way (docs/algorithm.md, sections 2-4)::

    image (B, 3, H, W)
      -> serializer: band tokens low -> high frequency (B, N, D), grids [(h_b, w_b)]
      -> cls token at N // 2, per-band resized pos_embed            (B, N + 1, D)
      -> 24 pre-norm Mamba blocks (fp32 residual stream)
      -> at each out index: norm, drop cls, split bands, finest band (B, D, H/16, W/16)
      -> simple feature pyramid: strides 4 / 8 / 16 / 32

``serialization='raster'`` with ``bimamba=True`` is the Vim baseline in the same pipeline.
"""
import math
import os.path as osp

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

from mmglobalmamba.registry import MODELS
from ..layers import (FrequencySerializer, MambaBlock, RasterSerializer, RMSNorm,
                      insert_middle_cls, resize_band_pos_embed, split_middle_cls,
                      split_tokens)
from .checkpoint import load_pretrained


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> embeddings: Conv2d(in, D, p, stride p), no norm."""

    def __init__(self, in_channels, embed_dims, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x)  # (B, D, H // p, W // p)


def _build_pyramid_level(stride, dim, norm_cfg):
    """One simple-feature-pyramid level from the stride-16 map."""
    if stride == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, stride=2), build_norm_layer(norm_cfg, dim)[1],
            nn.GELU(), nn.ConvTranspose2d(dim, dim, 2, stride=2))
    if stride == 8:
        return nn.ConvTranspose2d(dim, dim, 2, stride=2)
    if stride == 16:
        return nn.Identity()
    if stride == 32:
        return nn.MaxPool2d(2, stride=2)
    raise ValueError(f'pyramid stride must be one of 4, 8, 16, 32, got {stride}')


@MODELS.register_module()
class GlobalMamba(BaseModule):
    """GlobalMamba backbone (Wang et al., arXiv 2410.10316) for mmseg and mmdet.

    Args:
        arch (str | dict): 'tiny' (192), 'small' (384), or a dict with ``embed_dims``,
            ``depth`` and optionally ``d_state``, ``expand``.
        img_size (int | tuple): pretraining size; sets the stored pos_embed layout.
        patch_size (int): patch-embedding stride (16).
        in_channels (int): image channels.
        num_bands (int): K frequency bands (frequency serialization only).
        serialization (str): 'frequency' (GlobalMamba) or 'raster' (Vim).
        bimamba (bool): add Vim's backward scans (``*_b`` parameters).
        if_divide_out (bool): halve the sum of both directions (Vim's flag, default True);
            Vim's older spelling ``if_devide_out`` (released configs) is accepted too.
        out_indices (Sequence[int]): blocks whose outputs are returned; negative allowed.
        pyramid_strides (Sequence[int] | None): stride (4, 8, 16, 32) of each output, or
            None to return every output at stride 16.
        drop_rate (float): dropout after the position embedding.
        drop_path_rate (float): stochastic depth, linear over blocks.
        final_norm (bool): apply the pretrained ``norm_f`` to the last block's output.
        out_norm_cfg (dict | None): norm of every other output (over channels).
        norm_cfg (dict): norm inside the pyramid's stride-4 branch (SyncBN for multi-GPU).
        frozen_stages (int): freeze patch embedding, positions and the first n blocks.
        norm_eval (bool): keep the pyramid's BN layers in eval mode while training.
        with_cp (bool): activation checkpointing per block (mmseg's ``with_cp``): keep only
            each block's input and recompute the block in the backward pass (non-reentrant
            ``torch.utils.checkpoint``, RNG state replayed so drop path drops the same
            samples). Same loss and gradients, much less memory, about one more forward.
        init_cfg (dict | None): e.g. ``dict(type='Pretrained', checkpoint=PATH)`` with a
            released classifier checkpoint or (with ``prefix='backbone.'``) a full model.
    """

    arch_zoo = {
        'tiny': dict(embed_dims=192, depth=24),
        'small': dict(embed_dims=384, depth=24),
    }

    def __init__(self, arch='tiny', img_size=224, patch_size=16, in_channels=3, num_bands=4,
                 serialization='frequency', bimamba=False, if_divide_out=None,
                 out_indices=(5, 11, 17, 23), pyramid_strides=(4, 8, 16, 32), drop_rate=0.,
                 drop_path_rate=0., final_norm=True,
                 out_norm_cfg=dict(type='LN', eps=1e-6),
                 norm_cfg=dict(type='BN', requires_grad=True), frozen_stages=-1,
                 norm_eval=False, with_cp=False, init_cfg=None, if_devide_out=None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = D = self.arch_settings['embed_dims']
        self.depth = depth = self.arch_settings['depth']
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.in_channels = in_channels
        self.final_norm = final_norm
        self.if_divide_out = self._parse_divide_out(if_divide_out, if_devide_out)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        if serialization == 'frequency':
            self.serializer = FrequencySerializer(num_bands, patch_size)
        elif serialization == 'raster':
            self.serializer = RasterSerializer(patch_size)
        else:
            raise ValueError(f"serialization must be 'frequency' or 'raster', "
                             f'got {serialization!r}')
        self.out_indices = self._parse_out_indices(out_indices, depth)
        if pyramid_strides is None:
            pyramid_strides = (16,) * len(self.out_indices)
        if len(pyramid_strides) != len(self.out_indices):
            raise ValueError(f'pyramid_strides {tuple(pyramid_strides)} needs one stride per '
                             f'out index {self.out_indices}')

        self.patch_embed = PatchEmbed(in_channels, D, patch_size)
        self.pretrain_grids = self.serializer.band_grids(*self.img_size)
        num_tokens = sum(h * w for h, w in self.pretrain_grids)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, D))
        self.cls_token._no_weight_decay = self.pos_embed._no_weight_decay = True  # optimizer
        self.pos_drop = nn.Dropout(drop_rate)
        self._pos_cache = {}

        mixer_kwargs = dict(d_state=self.arch_settings.get('d_state', 16),
                            expand=self.arch_settings.get('expand', 2),
                            bimamba=bimamba, if_divide_out=self.if_divide_out)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.layers = nn.ModuleList(
            [MambaBlock(D, drop_path=dpr[i], **mixer_kwargs) for i in range(depth)])
        self.norm_f = RMSNorm(D, eps=1e-5)

        self.out_norms = nn.ModuleList()
        for idx in self.out_indices:
            if out_norm_cfg is None or (final_norm and idx == depth - 1):
                self.out_norms.append(nn.Identity())  # the last output uses norm_f
            else:
                self.out_norms.append(build_norm_layer(out_norm_cfg, D)[1])
        self.pyramid = nn.ModuleList(
            [_build_pyramid_level(s, D, norm_cfg) for s in pyramid_strides])
        self.pyramid_strides = tuple(pyramid_strides)

        self._init_random()
        self._freeze_stages()

    # ----------------------------------------------------------------- construction
    def _parse_arch(self, arch):
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise ValueError(f'unknown arch {arch!r}: choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict with embed_dims '
                                 'and depth')
            return dict(self.arch_zoo[arch])
        if isinstance(arch, dict):
            missing = {'embed_dims', 'depth'} - set(arch)
            if missing:
                raise ValueError(f'custom arch {arch} lacks {sorted(missing)}')
            return dict(arch)
        raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}')

    @staticmethod
    def _parse_divide_out(if_divide_out, if_devide_out):
        """Vim's flag under either spelling; True when neither is given."""
        if if_divide_out is not None and if_devide_out is not None \
                and bool(if_divide_out) != bool(if_devide_out):
            raise ValueError(f'if_divide_out={if_divide_out} and its older spelling '
                             f'if_devide_out={if_devide_out} disagree: pass only one')
        given = if_divide_out if if_divide_out is not None else if_devide_out
        return True if given is None else bool(given)

    @staticmethod
    def _parse_out_indices(out_indices, depth):
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for idx in out_indices:
            if not -depth <= idx < depth:
                raise ValueError(f'out index {idx} is out of range for {depth} blocks: use '
                                 f'0..{depth - 1} or -{depth}..-1')
            parsed.append(idx % depth)
        return tuple(parsed)

    def _init_random(self):
        """The released model's random init (Vim's ``segm_init_weights``/``_init_weights``)."""
        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        std = math.sqrt(1.0 / fan_in) / .87962566103423978  # lecun normal, truncated at 2 std
        trunc_normal_(proj.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(proj.bias)
        for layer in self.layers:
            for module in layer.mixer.modules():
                if isinstance(module, nn.Linear) and module.bias is not None \
                        and not getattr(module.bias, '_no_reinit', False):
                    nn.init.zeros_(module.bias)
            out_proj = layer.mixer.out_proj.weight  # GPT-2 style residual rescale
            nn.init.kaiming_uniform_(out_proj, a=math.sqrt(5))
            with torch.no_grad():
                out_proj /= math.sqrt(self.depth)

    def init_weights(self):
        """Load ``init_cfg`` pretrained weights with our loader (positions resized per
        band, head dropped, shape clashes named); random init otherwise (done at build)."""
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            checkpoint = self.init_cfg['checkpoint']
            if '://' not in checkpoint and not osp.isfile(osp.expanduser(checkpoint)):
                raise FileNotFoundError(
                    f'pretrained backbone weights {checkpoint!r} do not exist: convert an '
                    'ImageNet classifier with `python tools/convert_checkpoint.py CKPT '
                    f'{checkpoint} --arch ...` (no GlobalMamba weights are published; '
                    "Vim's are), or train from scratch with `--cfg-options "
                    'model.backbone.init_cfg=None` (README, "Pretrained weights").')
            load_pretrained(self, checkpoint,
                            prefix=self.init_cfg.get('prefix'),
                            logger=MMLogger.get_current_instance())
            self._is_init = True
            return
        super().init_weights()

    def _freeze_stages(self):
        if self.frozen_stages <= 0:
            return
        frozen = [self.patch_embed, *self.layers[:self.frozen_stages]]
        if self.frozen_stages >= self.depth:
            frozen.append(self.norm_f)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        self.pos_embed.requires_grad = False
        self.cls_token.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # ----------------------------------------------------------------- forward
    def band_pos_embed(self, grids):
        """pos_embed for the current band grids (1, N + 1, D), cached by size when no
        gradient flows into it and the forward is not being traced (export, compile)."""
        if list(grids) == list(self.pretrain_grids):
            return self.pos_embed
        tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()
        if tracing or (torch.is_grad_enabled() and self.pos_embed.requires_grad):
            return resize_band_pos_embed(self.pos_embed, self.pretrain_grids, grids)
        version = (self.pos_embed._version, self.pos_embed.data_ptr(), self.pos_embed.dtype)
        key = tuple(map(tuple, grids))
        hit = self._pos_cache.get(key)
        if hit is None or hit[0] != version:
            with torch.no_grad():
                hit = (version, resize_band_pos_embed(self.pos_embed, self.pretrain_grids,
                                                      grids))
            self._pos_cache[key] = hit
        return hit[1]

    def _check_input(self, x):
        if x.dim() != 4:
            raise ValueError(f'GlobalMamba expects images (B, C, H, W), got shape '
                             f'{tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'GlobalMamba was built for {self.in_channels}-channel images '
                             f'but got {x.shape[1]} channels: set in_channels='
                             f'{x.shape[1]} or convert the images')

    def embed(self, x):
        """Image -> token sequence with cls at N // 2 and positions: (B, N + 1, D)."""
        self._check_input(x)
        tokens, grids = self.serializer(x, self.patch_embed)  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        tokens = insert_middle_cls(tokens, cls)
        return self.pos_drop(tokens + self.band_pos_embed(grids)), grids

    def run_block(self, layer, h):
        """One block on the stream (B, N + 1, D), checkpointed when ``with_cp`` and a
        gradient will flow through it (frozen blocks on a frozen stream are not)."""
        if self.with_cp and torch.is_grad_enabled() and (
                h.requires_grad or any(p.requires_grad for p in layer.parameters())):
            return cp.checkpoint(layer, h, use_reentrant=False, preserve_rng_state=True)
        return layer(h)

    def forward_tokens(self, x):
        """The released classifier's final features: norm_f of the last stream (B, N+1, D)."""
        h, _ = self.embed(x)
        for layer in self.layers:
            h = self.run_block(layer, h)
        return self.norm_f(h)

    def restore(self, tokens, grids):
        """Normalized stream (B, N + 1, D) -> band maps [(B, D, h_b, w_b)], low to high."""
        return split_tokens(split_middle_cls(tokens)[0], grids)

    def forward(self, x):
        """Images (B, C, H, W) -> the pyramid outputs, one (B, D, H / s, W / s) per index."""
        return self.forward_band_maps(x)[0]

    def forward_band_maps(self, x):
        """Like :meth:`forward`, and also, per output, the coarse band maps of bands
        0..K-2 as the restore gives them: ``(outs, band_maps)`` with ``band_maps[j]`` a
        tuple of (B, D, h_b, w_b), low to high frequency (to look at or to probe)."""
        h, grids = self.embed(x)  # (B, N + 1, D)
        streams = {}
        for i, layer in enumerate(self.layers):
            h = self.run_block(layer, h)
            if i in self.out_indices:
                streams[i] = h
        # The heads run after the last block, so that the backward pass runs them (and
        # frees what they saved) before it reaches the blocks: under with_cp an early
        # output's pyramid would otherwise stay in memory through every block's backward.
        outs, band_maps = [], []
        for j, idx in enumerate(self.out_indices):
            norm = self.norm_f if self.final_norm and idx == self.depth - 1 \
                else self.out_norms[j]
            maps = self.restore(norm(streams[idx]), grids)  # low -> high, finest stride 16
            outs.append(self.pyramid[j](maps[-1].contiguous()))
            band_maps.append(tuple(maps[:-1]))
        return tuple(outs), tuple(band_maps)
