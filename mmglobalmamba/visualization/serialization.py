"""Draw GlobalMamba's frequency serialization: band images, token grids, scan order.

:func:`plot_serialization` renders one figure for any image size and band count:

* one panel per band (low to high frequency) showing the band's low-pass image
  (``FrequencySerializer.band_images``) with the band's token grid drawn over the area the
  patch embedding covers, each token at the centre of its cell;
* the scan path through the token centres, coloured by position in the scanned sequence
  (one colour scale for all bands), token numbers where the cells are large enough, arrows
  from the last token of a band to the first of the next, and a star where the cls token
  sits (sequence position ``N // 2``);
* a strip under the panels: the whole sequence, band by band, with the cls position.

It returns a :class:`SerializationPlot` holding the grids it actually drew, so callers and
tests can check them against ``FrequencySerializer.band_grids``.
"""
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
import torch

__all__ = ['SerializationPlot', 'make_example_image', 'load_image', 'scan_layout',
           'plot_serialization']


@dataclass
class SerializationPlot:
    """What :func:`plot_serialization` drew.

    Attributes:
        figure: the matplotlib figure.
        image_size: (H, W) of the serialized image.
        grids: (rows, cols) of the token grid drawn on each band, counted from the grid
            lines that were drawn.
        band_ranges: [start, stop) sequence positions (cls included) of each band.
        cls_position: sequence position of the cls token (``N // 2``).
        centers: per band, (h_b * w_b, 2) array of token centres (x, y) in image pixels,
            in scan order.
        num_labels: per band, how many token numbers were written.
    """
    figure: object
    image_size: Tuple[int, int]
    grids: List[Tuple[int, int]]
    band_ranges: List[Tuple[int, int]]
    cls_position: int
    centers: List[np.ndarray] = field(default_factory=list)
    num_labels: List[int] = field(default_factory=list)


def make_example_image(size=(224, 224)):
    """A deterministic synthetic RGB image (H, W, 3) uint8 with content at every frequency:
    a smooth colour gradient, a few large shapes, a fine stripe patch and a checkerboard."""
    H, W = size
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    v, u = y / max(H - 1, 1), x / max(W - 1, 1)
    img = np.stack([0.25 + 0.5 * u, 0.35 + 0.4 * v, 0.75 - 0.45 * u * v], axis=-1)
    # low/mid frequency: a sun disk and a dark slanted bar
    r = min(H, W)
    disk = (x - 0.28 * W) ** 2 + (y - 0.30 * H) ** 2 < (0.18 * r) ** 2
    img[disk] = (0.98, 0.82, 0.20)
    bar = np.abs((x - 0.62 * W) * 0.5 + (y - 0.55 * H) * 0.866) < 0.06 * r
    bar &= np.abs((x - 0.62 * W) * 0.866 - (y - 0.55 * H) * 0.5) < 0.35 * r
    img[bar] = (0.15, 0.20, 0.45)
    # high frequency: vertical stripes of period 6 px and a 4-px checkerboard
    stripes = (x > 0.08 * W) & (x < 0.45 * W) & (y > 0.62 * H) & (y < 0.90 * H)
    img[stripes] *= (0.55 + 0.45 * (np.floor(x / 3) % 2))[stripes, None]
    check = (x > 0.60 * W) & (x < 0.92 * W) & (y > 0.08 * H) & (y < 0.32 * H)
    board = (np.floor(x / 4) + np.floor(y / 4)) % 2
    img[check] = np.where(board[check, None] > 0, 0.95, 0.1) * np.array([0.9, 0.3, 0.3])
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def load_image(path, size=None):
    """Read an image as float RGB (H, W, 3) in [0, 1]; ``size=(H, W)`` resizes (bilinear)."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert('RGB')
        if size is not None:
            im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32) / 255.0


def _as_float_image(image, size=None):
    """Array (H, W, 3) uint8/float or a path -> float32 (H, W, 3) in [0, 1], resized."""
    if isinstance(image, (str, bytes)) or hasattr(image, '__fspath__'):
        return load_image(image, size)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        from PIL import Image
        im = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))
        arr = np.asarray(im.resize((int(size[1]), int(size[0])), Image.BILINEAR),
                         dtype=np.float32) / 255.0
    return arr


def scan_layout(H, W, num_bands=4, patch_size=16):
    """Geometry of the scan, without drawing.

    Returns a dict with ``grids`` (from ``FrequencySerializer.band_grids``), ``covered``
    (the (H', W') pixel area the patch embedding sees: whole patches only), ``centers``
    (per band, token centres (x, y) in pixels, row-major), ``positions`` (per band,
    sequence positions of its tokens once cls is inserted), ``cls_position`` and
    ``num_tokens`` (N, without cls).

    A band token (i, j) of a (h, w) grid is the bilinear resize of the (H // p, W // p)
    patch map, so it covers pixels ``[i, i + 1) * H' / h`` by ``[j, j + 1) * W' / w``.
    """
    from mmglobalmamba.models.layers.serializer import FrequencySerializer
    ser = FrequencySerializer(num_bands, patch_size)
    grids = ser.band_grids(H, W)
    Hc, Wc = (H // patch_size) * patch_size, (W // patch_size) * patch_size
    N = sum(h * w for h, w in grids)
    cls_pos = N // 2
    centers, positions, start = [], [], 0
    for h, w in grids:
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
        centers.append(np.stack([(jj.ravel() + 0.5) * Wc / w,
                                 (ii.ravel() + 0.5) * Hc / h], axis=1))
        idx = np.arange(start, start + h * w)
        positions.append(np.where(idx >= cls_pos, idx + 1, idx))
        start += h * w
    return dict(grids=grids, covered=(Hc, Wc), centers=centers, positions=positions,
                cls_position=cls_pos, num_tokens=N)


def _band_images(img, num_bands, patch_size):
    """The K low-pass images (H, W, 3) of a float image, lowest band first."""
    from mmglobalmamba.models.layers.serializer import FrequencySerializer
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].double()
    with torch.no_grad():
        bands = FrequencySerializer(num_bands, patch_size).band_images(x)
    return [np.clip(b[0].permute(1, 2, 0).float().numpy(), 0, 1) for b in bands]


def _cls_anchor(layout):
    """(band, (x, y)) where the cls star goes: between the tokens scanned just before and
    just after it, or at the near edge of the neighbouring token at a band boundary."""
    N, c = layout['num_tokens'], layout['cls_position']
    sizes = [h * w for h, w in layout['grids']]
    bounds = np.cumsum([0] + sizes)

    def locate(t):
        b = int(np.searchsorted(bounds, t, side='right') - 1)
        return b, layout['centers'][b][t - bounds[b]]

    Hc, Wc = layout['covered']
    if 0 <= c - 1 and c < N:
        (b0, p0), (b1, p1) = locate(c - 1), locate(c)
        if b0 == b1:
            return b0, (p0 + p1) / 2
    if c < N:
        b, p = locate(c)
        h, w = layout['grids'][b]
        return b, p - np.array([0.5 * Wc / w, 0.0])
    b, p = locate(c - 1)
    h, w = layout['grids'][b]
    return b, p + np.array([0.5 * Wc / w, 0.0])


def _save(fig, out, dpi, palette):
    """Save the figure; with ``palette`` as an 8-bit palette PNG (for docs)."""
    if not palette or not str(out).lower().endswith('.png'):
        fig.savefig(out, dpi=dpi)
        return
    import io

    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format='png')
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert('RGB').quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            out, optimize=True)


def plot_serialization(image, num_bands=4, patch_size=16, size=None, out=None,
                       panel_inches=3.2, dpi=110, cmap='viridis', label_tokens=True,
                       title=None, palette=False):
    """Draw the frequency serialization of one image.

    Args:
        image: path, or an (H, W, 3) / (H, W) array (uint8 0-255 or float 0-1).
        num_bands (int): K, the number of frequency bands.
        patch_size (int): patch-embedding stride.
        size (tuple | None): (H, W) to resize the image to first.
        out (str | None): write the figure there (PNG) and close it.
        panel_inches (float): width of the widest band panel, in inches.
        dpi (int): resolution of the saved PNG.
        cmap (str): colour scale of sequence positions.
        label_tokens (bool): write token numbers where cells are large enough.
        title (str | None): figure title (default: size, K, N).
        palette (bool): save a PNG with a 256-colour palette (about 3x smaller files).

    Returns:
        SerializationPlot: the figure and the geometry it drew.
    """
    import matplotlib
    if out is not None:
        matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.patches import ConnectionPatch, Rectangle

    img = _as_float_image(image, size)
    H, W = img.shape[:2]
    layout = scan_layout(H, W, num_bands, patch_size)
    grids, (Hc, Wc) = layout['grids'], layout['covered']
    N, cls_pos = layout['num_tokens'], layout['cls_position']
    bands = _band_images(img, num_bands, patch_size)
    K = len(grids)
    norm = Normalize(vmin=0, vmax=N)
    colours = plt.get_cmap(cmap)

    # explicit layout in inches: title, band panels, sequence strip, its axis label
    panel_w, panel_h = panel_inches, panel_inches * H / W
    gap, margin, top, mid, strip_h, bottom = 0.25, 0.2, 0.85, 0.3, 0.35, 0.55
    fig_w = K * panel_w + (K - 1) * gap + 2 * margin
    fig_h = top + panel_h + mid + strip_h + bottom
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    axes = [fig.add_axes([(margin + b * (panel_w + gap)) / fig_w,
                          (bottom + strip_h + mid) / fig_h, panel_w / fig_w, panel_h / fig_h])
            for b in range(K)]
    strip = fig.add_axes([margin / fig_w, bottom / fig_h, 1 - 2 * margin / fig_w,
                          strip_h / fig_h])

    drawn, n_labels = [], []
    cls_band, cls_xy = _cls_anchor(layout)
    for b, (ax, band, (h, w)) in enumerate(zip(axes, bands, grids)):
        ax.imshow(band, extent=(0, W, H, 0), interpolation='nearest')
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        if (Hc, Wc) != (H, W):  # pixels no patch sees
            ax.add_patch(Rectangle((0, 0), Wc, Hc, fill=False, ec='w', lw=0.8, ls='--'))
        ys, xs = np.linspace(0, Hc, h + 1), np.linspace(0, Wc, w + 1)
        grid_lw = max(0.3, min(1.0, 24.0 / max(h, w)))
        grid_alpha = 0.8 if max(h, w) <= 32 else 0.45
        ax.hlines(ys, 0, Wc, colors='white', lw=grid_lw, alpha=grid_alpha)
        ax.vlines(xs, 0, Hc, colors='white', lw=grid_lw, alpha=grid_alpha)
        drawn.append((len(ys) - 1, len(xs) - 1))

        pts, pos = layout['centers'][b], layout['positions'][b]
        path_pts, path_pos = pts, pos.astype(float)
        if b == cls_band:  # the path passes through the cls slot
            k = int(np.searchsorted(pos, cls_pos))
            path_pts = np.insert(pts, k, cls_xy, axis=0)
            path_pos = np.insert(path_pos, k, cls_pos)
        if len(path_pts) > 1:
            segs = np.stack([path_pts[:-1], path_pts[1:]], axis=1)
            lc = LineCollection(segs, cmap=colours, norm=norm,
                                linewidths=max(0.5, min(2.0, 30.0 / max(h, w))))
            lc.set_array((path_pos[:-1] + path_pos[1:]) / 2)
            ax.add_collection(lc)
        dot = max(1.0, min(30.0, 900.0 / (h * w)))
        ax.scatter(pts[:, 0], pts[:, 1], c=pos, cmap=colours, norm=norm, s=dot, zorder=3,
                   edgecolors='none')

        # token numbers when a cell is big enough for them
        cell_pt = min(panel_w / w, panel_h / h) * 72
        digits = len(str(N))
        fs = min(9.0, 0.8 * cell_pt / max(digits, 2))
        count = 0
        if label_tokens and fs >= 3.0:
            for (px, py), p in zip(pts, pos):
                ax.text(px, py, str(p), fontsize=fs, ha='center', va='center', color='k',
                        zorder=4, bbox=dict(boxstyle='round,pad=0.12', fc='white', ec='none',
                                            alpha=0.7))
                count += 1
        elif label_tokens:  # too small: number the first and the last token only
            for i, side in ((0, 'left'), (len(pos) - 1, 'right')):
                ax.annotate(str(pos[i]), pts[i], fontsize=6, color='k', zorder=4, ha=side,
                            xytext=(2 if side == 'left' else -2, 2), textcoords='offset points',
                            bbox=dict(boxstyle='round,pad=0.1', fc='white', ec='none',
                                      alpha=0.8))
                count += 1
        n_labels.append(count)
        if b == cls_band:
            ax.scatter([cls_xy[0]], [cls_xy[1]], marker='*', s=170, c='red',
                       edgecolors='white', linewidths=0.8, zorder=5)
            left = cls_xy[0] > W / 2  # keep the label inside the panel
            ax.annotate(f'cls @ {cls_pos}', cls_xy, xytext=(-8 if left else 8, -11),
                        textcoords='offset points', ha='right' if left else 'left',
                        fontsize=7, color='red', zorder=5, fontweight='bold',
                        bbox=dict(boxstyle='round,pad=0.15', fc='white', ec='none', alpha=0.8))
        first, last = int(pos[0]), int(pos[-1])
        noun = 'token' if h * w == 1 else 'tokens'
        ax.set_title(f'band {b}: {h}x{w} = {h * w} {noun}\nseq {first}-{last}', fontsize=9)

    # scan order across bands: last token of band b -> first token of band b + 1
    for b in range(K - 1):
        start = layout['centers'][b][-1]
        end = layout['centers'][b + 1][0]
        con = ConnectionPatch(xyA=start, coordsA=axes[b].transData, xyB=end,
                              coordsB=axes[b + 1].transData, arrowstyle='-|>',
                              color='orangered', lw=1.2, mutation_scale=10,
                              connectionstyle='arc3,rad=-0.25', zorder=6)
        fig.add_artist(con)

    # the whole sequence, band by band, cls at N // 2
    ranges = []
    for b, pos in enumerate(layout['positions']):
        lo, hi = int(pos[0]), int(pos[-1]) + 1
        if b == cls_band:  # the band whose panel shows the cls slot also owns it here
            lo, hi = min(lo, cls_pos), max(hi, cls_pos + 1)
        ranges.append((lo, hi))
    for b, ((lo, hi), (h, w)) in enumerate(zip(ranges, grids)):
        mid = (lo + hi) / 2
        strip.barh(0, hi - lo, left=lo, height=0.8, color=colours(norm(mid)),
                   edgecolor='k', lw=0.5)
        if (hi - lo) / (N + 1) * (fig_w - 2 * margin) > 0.45:  # room for a label
            strip.text(mid, 0, f'band {b}: {h * w}', ha='center', va='center', fontsize=7,
                       color='white' if mid < 0.6 * N else 'k', clip_on=True)
    strip.axvline(cls_pos + 0.5, color='red', lw=2)
    strip.plot([cls_pos + 0.5], [0.45], marker='*', ms=12, color='red', mec='white',
               clip_on=False, zorder=5)
    strip.set_xlim(0, N + 1)
    strip.set_ylim(-0.45, 0.45)
    strip.set_yticks([])
    strip.set_xlabel(f'scan order: sequence position 0..{N} (cls token at N//2 = {cls_pos}; '
                     f'low -> high frequency)', fontsize=8)
    strip.tick_params(labelsize=7)
    fig.suptitle(title or f'GlobalMamba frequency serialization: {H}x{W} image, K={K} bands, '
                 f'N={N} tokens + cls', fontsize=10, y=1 - 0.12 / fig_h, va='top')

    if out is not None:
        _save(fig, out, dpi, palette)
        plt.close(fig)
    return SerializationPlot(figure=fig, image_size=(H, W), grids=drawn, band_ranges=ranges,
                             cls_position=cls_pos, centers=layout['centers'],
                             num_labels=n_labels)
