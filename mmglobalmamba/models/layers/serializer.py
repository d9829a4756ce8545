"""Image -> token sequence orders, and the way back to spatial maps.

``FrequencySerializer`` is GlobalMamba's order (docs/algorithm.md, 2.1-2.5): K cumulative DCT low-pass
images of the input, each patch-embedded by the one shared patch embedding, resized to a grid
that grows with the band, and concatenated from the lowest band to the full image.
``RasterSerializer`` is Vim's row-major order over one grid, for baselines.
Both give ``(tokens, grids)`` and split tokens back into per-band maps.
"""
import functools

import numpy as np
import torch


def split_tokens(tokens, grids):
    """Split (B, N, C) band tokens into per-band maps [(B, C, h, w), ...] in scan order."""
    sizes = [h * w for h, w in grids]
    assert tokens.shape[1] == sum(sizes), (tokens.shape, grids)
    maps = []
    for part, (h, w) in zip(tokens.split(sizes, dim=1), grids):
        maps.append(part.transpose(1, 2).reshape(part.shape[0], part.shape[2], h, w))
    return maps


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in, n_out):
    """(n_out, n_in) float64 weights of the bilinear resize along one axis, as
    ``F.interpolate(mode='bilinear', align_corners=False)`` defines it: output i reads
    floor(s) and the next input with s = max(0, (i + 0.5) n_in / n_out - 0.5)."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max(0.0, (i + 0.5) * n_in / n_out - 0.5)
        lo = min(int(src), n_in - 1)
        frac = src - lo
        weights[i, lo] += 1.0 - frac
        weights[i, min(lo + 1, n_in - 1)] += frac
    return weights


@functools.lru_cache(maxsize=64)
def _band_readout(n_pix, s, n_grid, patch_size, device, dtype):
    """(patch_size * n_grid, s): from s low DCT coefficients to the pixel lines of a band's
    token image: the inverse DCT onto the lines of the whole patch grid, then the bilinear
    resize of that grid to n_grid, acting on whole patches. Built in float64 with numpy,
    once per size (so that a traced forward, e.g. FLOP counting, does not record it)."""
    from .dct import dct_basis
    n_full = n_pix // patch_size
    resize = np.kron(resize_matrix(n_full, n_grid), np.eye(patch_size))  # (p n_grid, p n_full)
    inverse = dct_basis(n_pix, 'cpu', torch.float64)[:s, :patch_size * n_full].numpy()
    return torch.from_numpy(resize @ inverse.T).to(device=device, dtype=dtype)


class _Serializer:
    patch_size: int

    def check_size(self, H, W):
        p = self.patch_size
        if H < p or W < p:
            raise ValueError(
                f'input of {H}x{W} pixels is smaller than one {p}x{p} patch: resize or pad '
                f'images to at least {p}x{p} (e.g. a Resize/Pad transform in the pipeline).')


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
        """Token grid (h_b, w_b) of every band, low to high: docs/algorithm.md 2.4, at least 1x1."""
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

    def _band_spectra(self, x):
        """Masked low-pass spectra of bands 0..K-2: [(B, C, s_h, s_w), ...] (math dtype)."""
        from .dct import dct_2d_triangle
        blocks = self.spectrum_blocks(*x.shape[-2:])
        if not blocks:
            return []
        rows = max(s_h for s_h, _ in blocks)
        cols = max(s_w for _, s_w in blocks)
        # (B, C, rows, cols), only its low triangle: every band's triangle lies inside it
        spec = dct_2d_triangle(x, rows, cols)
        return [spec[..., :s_h, :s_w] * self._triangle(s_h, s_w, x.device)
                for s_h, s_w in blocks]

    def band_images(self, x):
        """The K low-pass images of x (B, C, H, W), lowest band first; the last is x."""
        from .dct import idct_2d
        H, W = x.shape[-2:]
        self.check_size(H, W)
        with torch.autocast(x.device.type, enabled=False):
            images = [idct_2d(low, (H, W)).to(x.dtype) for low in self._band_spectra(x)]
        return images + [x]

    def __call__(self, x, patch_embed):
        """x (B, C, H, W) -> tokens (B, N, D) low to high frequency, and the band grids.

        The tokens of the plain route (patch-embed every band image, bilinearly resize its
        patch grid to the band grid), computed cheaper: the resize mixes whole patches with
        weights summing to 1, so it commutes with the linear patch embedding and is applied
        to the pixels instead, folded into the inverse DCT (``_band_readout``). Band b is
        then patch-embedded at its own grid, e.g. from a 256 x 256 instead of a 512 x 512
        image for band K-2 at 512 x 512.
        """
        from .dct import triangle_product
        H, W = x.shape[-2:]
        grids = self.band_grids(H, W)
        p = self.patch_size
        images = []
        with torch.autocast(x.device.type, enabled=False):
            spectra = self._band_spectra(x)
            for low, (h, w) in zip(spectra, grids):
                s_h, s_w = low.shape[-2:]
                rows = _band_readout(H, s_h, h, p, x.device, low.dtype)  # (p h, s_h)
                cols = _band_readout(W, s_w, w, p, x.device, low.dtype)  # (p w, s_w)
                image = triangle_product(rows, low, cols)  # (B, C, p h, p w)
                images.append(image.to(x.dtype))
        images.append(x)  # band K-1: the image itself, on the whole patch grid
        tokens = [patch_embed(image).flatten(2) for image in images]  # (B, D, h_b * w_b)
        return torch.cat(tokens, dim=2).transpose(1, 2), grids
