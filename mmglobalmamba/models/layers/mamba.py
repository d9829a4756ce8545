"""Mamba-1 mixer and the pre-norm residual block of Vim / GlobalMamba.

Parameter names follow mamba_ssm's ``Mamba`` (``in_proj``, ``conv1d``, ``x_proj``,
``dt_proj``, ``A_log``, ``D``, ``out_proj``) so released checkpoints load unchanged.
``bimamba=True`` adds Vim's backward scan (``*_b`` parameters, 'v2' style).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath

from mmglobalmamba.ops import mamba_inner


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in fp32."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return out.to(self.weight.dtype)


class MambaMixer(nn.Module):
    """Selective state-space mixer: (B, L, D) -> (B, L, D), causal along L.

    ``y = selective_scan(silu(conv(x)), softplus(dt_proj(dt)), -exp(A_log), B, C, D) * silu(z)``
    with ``x, z = in_proj(h)`` and ``dt, B, C = x_proj(silu(conv(x)))``.
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank='auto',
                 dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, dt_scale=1.0,
                 conv_bias=True, bias=False, bimamba=False, if_divide_out=False):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == 'auto' else dt_rank
        self.bimamba = bimamba
        self.if_divide_out = if_divide_out

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        directions = ('', '_b') if bimamba else ('',)
        for sfx in directions:
            conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                             padding=d_conv - 1, bias=conv_bias)
            x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            self._init_dt(dt_proj, dt_min, dt_max, dt_init_floor, dt_scale)
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
            A_log = nn.Parameter(torch.log(A))  # (d_inner, d_state): S4D-real init
            D = nn.Parameter(torch.ones(self.d_inner))
            A_log._no_weight_decay = D._no_weight_decay = True
            setattr(self, 'conv1d' + sfx, conv)
            setattr(self, 'x_proj' + sfx, x_proj)
            setattr(self, 'dt_proj' + sfx, dt_proj)
            setattr(self, 'A_log' if not sfx else 'A_b_log', A_log)
            setattr(self, 'D' + sfx, D)

    def _init_dt(self, dt_proj, dt_min, dt_max, floor, scale):
        """mamba_simple's dt init: small uniform weight; bias = softplus^-1 of a
        log-uniform step in [dt_min, dt_max]."""
        std = self.dt_rank ** -0.5 * scale
        nn.init.uniform_(dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        dt_proj.bias._no_reinit = True

    def _scan(self, xz, sfx):
        """One direction's conv + selective scan + gate + out_proj (no bias): (B, L, D)."""
        conv = getattr(self, 'conv1d' + sfx)
        A_log = self.A_log if not sfx else self.A_b_log
        return mamba_inner(
            xz, conv.weight.squeeze(1), conv.bias, getattr(self, 'x_proj' + sfx).weight,
            getattr(self, 'dt_proj' + sfx).weight, self.out_proj.weight, None,
            -torch.exp(A_log.float()), getattr(self, 'D' + sfx).float(),
            getattr(self, 'dt_proj' + sfx).bias.float(), delta_softplus=True)

    def forward(self, hidden):
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2 * d_inner, L)
        out = self._scan(xz, '')
        if self.bimamba:
            out = out + self._scan(xz.flip(-1), '_b').flip(1)
            if self.if_divide_out:
                out = out / 2
        if self.out_proj.bias is not None:
            out = out + self.out_proj.bias
        return out  # (B, L, D)


class MambaBlock(nn.Module):
    """``x + drop_path(mixer(RMSNorm(x)))`` with the residual stream kept in fp32.

    The released Vim code defers each residual add to the next block (``inter_dpr`` =
    [0] + linspace); written as a plain pre-norm block the drop-path rate of block i is
    ``linspace(0, rate, depth)[i]``, the same computation.
    """

    def __init__(self, dim, drop_path=0., norm_eps=1e-5, **mixer_kwargs):
        super().__init__()
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.mixer = MambaMixer(dim, **mixer_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        residual = x.float()  # (B, L, D) fp32 residual stream
        hidden = self.mixer(self.norm(residual.to(self.norm.weight.dtype)))
        return residual + self.drop_path(hidden).float()
