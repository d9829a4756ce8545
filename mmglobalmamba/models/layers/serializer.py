"""Image -> token sequence orders, and the way back to spatial maps.

``FrequencySerializer`` is GlobalMamba's order (DESIGN 2.1-2.5): K cumulative DCT low-pass
images of the input, each patch-embedded by the one shared patch embedding, resized to a grid
that grows with the band, and concatenated from the lowest band to the full image.
``RasterSerializer`` is Vim's row-major order over one grid, for baselines.
Both give ``(tokens, grids)`` and split tokens back into per-band maps.
"""
import functools

import torch
import torch.nn.functional as F


def split_tokens(tokens, grids):
    """Split (B, N, C) band tokens into per-band maps [(B, C, h, w), ...] in scan order."""
    sizes = [h * w for h, w in grids]
    assert tokens.shape[1] == sum(sizes), (tokens.shape, grids)
    maps = []
    for part, (h, w) in zip(tokens.split(sizes, dim=1), grids):
        maps.append(part.transpose(1, 2).reshape(part.shape[0], part.shape[2], h, w))
    return maps


class _Serializer:
    patch_size: int

    def check_size(self, H, W):
        p = self.patch_size
        if H < p or W < p:
            raise ValueError(
                f'input of {H}x{W} pixels is smaller than one {p}x{p} patch: resize or pad '
                f'images to at least {p}x{p} (e.g. a Resize/Pad transform in the pipeline).')

    split = staticmethod(split_tokens)


class RasterSerializer(_Serializer):
    """Vim's order: one grid of patches, flattened row-major."""

    num_bands = 1

    def __init__(self, patch_size=16):
        self.patch_size = patch_size

    def band_grids(self, H, W):
        self.check_size(H, W)
        return [(H // self.patch_size, W // self.patch_size)]

    def __call__(self, x, patch_embed):
        self.check_size(*x.shape[-2:])
        feat = patch_embed(x)  # (B, D, h, w)
        return feat.flatten(2).transpose(1, 2), [tuple(feat.shape[-2:])]


class FrequencySerializer(_Serializer):
    """GlobalMamba's low-to-high frequency token pyramid.

    Args:
        num_bands (int): K, the number of low-pass bands (4 in the paper).
        patch_size (int): stride of the shared patch embedding (16).
    """

    def __init__(self, num_bands=4, patch_size=16):
        if num_bands < 1:
            raise ValueError(f'num_bands must be >= 1, got {num_bands}')
        self.num_bands = num_bands
        self.patch_size = patch_size

    def band_grids(self, H, W):
        """Token grid (h_b, w_b) of every band, low to high: DESIGN 2.4, at least 1x1."""
        self.check_size(H, W)
        K, p = self.num_bands, self.patch_size
        return [(max(1, int((H // 2 ** (K - 1 - b)) / p)),
                 max(1, int((W // 2 ** (K - 1 - b)) / p))) for b in range(K)]

    def spectrum_blocks(self, H, W):
        """Low-pass extent (s_h, s_w) of bands 0..K-2; band K-1 keeps the whole spectrum."""
        K = self.num_bands
        return [(max(1, H // 2 ** (K - 2 - b)), max(1, W // 2 ** (K - 2 - b)))
                for b in range(K - 1)]

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def _triangle(s_h, s_w, device):
        """mask[u, v] = u/s_h + v/s_w < 1, in exact integer arithmetic. (s_h, s_w)."""
        u = torch.arange(s_h).unsqueeze(1)
        v = torch.arange(s_w).unsqueeze(0)
        return (u * s_w + v * s_h < s_h * s_w).to(device)

    def band_images(self, x):
        """The K low-pass images of x (B, C, H, W), lowest band first; the last is x."""
        from .dct import dct_2d, idct_2d
        H, W = x.shape[-2:]
        self.check_size(H, W)
        blocks = self.spectrum_blocks(H, W)
        images = []
        if blocks:
            with torch.autocast(x.device.type, enabled=False):
                rows = max(s_h for s_h, _ in blocks)
                cols = max(s_w for _, s_w in blocks)
                spec = dct_2d(x, rows, cols)  # (B, C, rows, cols): the only part any band keeps
                for s_h, s_w in blocks:
                    mask = self._triangle(s_h, s_w, x.device)
                    low = spec[..., :s_h, :s_w] * mask  # (B, C, s_h, s_w)
                    images.append(idct_2d(low, (H, W)).to(x.dtype))
        images.append(x)
        return images

    def __call__(self, x, patch_embed):
        """x (B, C, H, W) -> tokens (B, N, D) low to high frequency, and the band grids."""
        grids = self.band_grids(*x.shape[-2:])
        images = self.band_images(x)
        # one patch-embedding call for all bands: (K*B, D, H // p, W // p)
        feats = patch_embed(torch.cat(images, dim=0)).chunk(len(images), dim=0)
        tokens = []
        for feat, grid in zip(feats, grids):
            if tuple(feat.shape[-2:]) != grid:
                feat = F.interpolate(feat, size=grid, mode='bilinear', align_corners=False)
            tokens.append(feat.flatten(2))  # (B, D, h_b * w_b), row-major
        return torch.cat(tokens, dim=2).transpose(1, 2), grids
