"""DCT, frequency serializer, per-band positions: checked against scipy and the authors'
algorithm written out independently in tests/reference_globalmamba.py."""
from fractions import Fraction

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from mmglobalmamba.models.layers import (FrequencySerializer, RasterSerializer, dct_2d,
                                         idct_2d, resize_band_pos_embed, split_tokens)
from reference_globalmamba import released_band_images, released_tokens


@pytest.mark.parametrize('shape', [(2, 3, 7, 10), (1, 1, 16, 16), (1, 2, 33, 5)])
def test_dct_matches_scipy(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1), norm='ortho')
    np.testing.assert_allclose(dct_2d(x).numpy(), ref, atol=1e-10)
    back = scipy.fft.idctn(ref, type=2, axes=(-2, -1), norm='ortho')
    np.testing.assert_allclose(idct_2d(torch.from_numpy(ref), shape[-2:]).numpy(), back,
                               atol=1e-10)


def test_low_block_dct_and_inverse():
    """The truncated transforms equal the full ones with the rest of the spectrum zeroed."""
    x = torch.randn(2, 3, 20, 12, dtype=torch.float64)
    full = scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1), norm='ortho')
    block = dct_2d(x, 5, 7)
    np.testing.assert_allclose(block.numpy(), full[..., :5, :7], atol=1e-10)
    padded = np.zeros_like(full)
    padded[..., :5, :7] = full[..., :5, :7]
    ref = scipy.fft.idctn(padded, type=2, axes=(-2, -1), norm='ortho')
    np.testing.assert_allclose(idct_2d(block, (20, 12)).numpy(), ref, atol=1e-10)


@pytest.mark.parametrize('size,grids', [
    ((224, 224), [(1, 1), (3, 3), (7, 7), (14, 14)]),
    ((512, 512), [(4, 4), (8, 8), (16, 16), (32, 32)]),
    ((800, 1344), [(6, 10), (12, 21), (25, 42), (50, 84)]),
    ((16, 16), [(1, 1), (1, 1), (1, 1), (1, 1)]),
    ((225, 47), [(1, 1), (3, 1), (7, 1), (14, 2)]),
])
def test_band_grids_hand_computed(size, grids):
    assert FrequencySerializer(4, 16).band_grids(*size) == grids


def test_tokens_match_released_algorithm_at_224():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    embed = torch.nn.Conv2d(3, 32, 16, stride=16)
    tokens, grids = FrequencySerializer(4, 16)(x, embed)
    ref = released_tokens(x, embed.weight, embed.bias)
    assert grids == [(1, 1), (3, 3), (7, 7), (14, 14)]
    assert tokens.shape == ref.shape == (2, 255, 32)
    torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)


def test_band_images_match_released_masks():
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    ours = FrequencySerializer(4, 16).band_images(x)
    ref = released_band_images(x)
    assert len(ours) == 4 and ours[-1] is x
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    # the bands are cumulative low-pass images: energy grows with the band
    energy = [float((img - img.mean()).pow(2).sum()) for img in ours]
    assert energy == sorted(energy)


def test_non_square_band_images_follow_the_mask_formula():
    """u/s_h + v/s_w < 1 evaluated with exact fractions, spectrum by scipy."""
    H, W, K = 37, 53, 4
    x = torch.randn(1, 2, H, W, dtype=torch.float64)
    spec = scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1))
    ours = FrequencySerializer(K, 16).band_images(x)
    for b in range(K - 1):
        s_h, s_w = H // 2 ** (K - 2 - b), W // 2 ** (K - 2 - b)
        mask = np.array([[Fraction(u, s_h) + Fraction(v, s_w) < 1 for v in range(W)]
                         for u in range(H)], dtype=float)
        ref = scipy.fft.idctn(spec * mask, type=2, axes=(-2, -1))
        np.testing.assert_allclose(ours[b].numpy(), ref, atol=1e-9)


def test_round_trip_restores_each_band_map():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 160)
    embed = torch.nn.Conv2d(3, 8, 16, stride=16)
    ser = FrequencySerializer(4, 16)
    tokens, grids = ser(x, embed)
    maps = split_tokens(tokens, grids)
    assert [tuple(m.shape[-2:]) for m in maps] == grids
    for image, m, grid in zip(ser.band_images(x), maps, grids):
        expect = F.interpolate(embed(image), size=grid, mode='bilinear', align_corners=False)
        torch.testing.assert_close(m, expect, atol=1e-5, rtol=1e-5)


def test_raster_serializer_is_row_major():
    x = torch.randn(1, 3, 48, 32)
    embed = torch.nn.Conv2d(3, 4, 16, stride=16)
    tokens, grids = RasterSerializer(16)(x, embed)
    assert grids == [(3, 2)]
    feat = embed(x)
    assert torch.equal(tokens[0, 1], feat[0, :, 0, 1])  # row 0, column 1
    assert torch.equal(tokens[0, 2], feat[0, :, 1, 0])  # row 1, column 0


@pytest.mark.parametrize('n_in', [1, 2, 7, 14, 32, 50])
def test_resize_matrix_is_the_bilinear_resize(n_in):
    from mmglobalmamba.models.layers.serializer import resize_matrix
    signal = torch.randn(3, 1, 4, n_in, dtype=torch.float64)
    for n_out in range(1, n_in + 1):
        M = torch.from_numpy(resize_matrix(n_in, n_out))
        assert M.shape == (n_out, n_in)
        torch.testing.assert_close(M.sum(1), torch.ones(n_out, dtype=torch.float64))
        expect = F.interpolate(signal, size=(4, n_out), mode='bilinear', align_corners=False)
        torch.testing.assert_close(signal @ M.T, expect, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize('shape,rows,cols', [((2, 3, 20, 12), 20, 12),
                                             ((1, 2, 33, 17), 16, 8), ((1, 1, 5, 3), 5, 3),
                                             ((1, 1, 3, 9), 2, 9)])
def test_triangle_transforms_equal_masked_dense_ones(shape, rows, cols):
    """The blocked transforms skip only coefficients outside the low triangle."""
    from mmglobalmamba.models.layers.dct import dct_2d_triangle, triangle_product
    x = torch.randn(*shape, dtype=torch.float64)
    mask = FrequencySerializer._triangle(rows, cols, torch.device('cpu'))
    X = dct_2d(x, rows, cols) * mask
    torch.testing.assert_close(dct_2d_triangle(x, rows, cols) * mask, X)
    left = torch.randn(7, rows, dtype=torch.float64)
    right = torch.randn(9, cols, dtype=torch.float64)
    torch.testing.assert_close(triangle_product(left, X, right), left @ X @ right.T)


@pytest.mark.parametrize('size,K', [((512, 512), 4), ((224, 224), 4), ((800, 1344), 4),
                                    ((225, 47), 4), ((130, 250), 3), ((96, 400), 5),
                                    ((16, 16), 4)])
def test_tokens_equal_embedding_whole_band_images(size, K):
    """The serializer folds each band's grid resize into its inverse DCT; the tokens must
    equal the plain route: every band image whole, patch-embedded, resized to its grid."""
    torch.manual_seed(K)
    x = torch.randn(2, 3, *size)
    embed = torch.nn.Conv2d(3, 8, 16, stride=16)
    ser = FrequencySerializer(K, 16)
    tokens, grids = ser(x, embed)
    plain = []
    for image, grid in zip(ser.band_images(x), grids):
        feat = embed(image)
        if tuple(feat.shape[-2:]) != grid:
            feat = F.interpolate(feat, size=grid, mode='bilinear', align_corners=False)
        plain.append(feat.flatten(2))
    plain = torch.cat(plain, dim=2).transpose(1, 2)
    assert tokens.shape == plain.shape
    torch.testing.assert_close(tokens, plain, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(15, 64), (64, 8)])
def test_too_small_image_is_a_clear_error(size):
    with pytest.raises(ValueError, match='smaller than one 16x16 patch'):
        FrequencySerializer(4, 16)(torch.randn(1, 3, *size), torch.nn.Conv2d(3, 4, 16, 16))


def test_pos_embed_resized_per_band_with_cls_in_the_middle():
    ser = FrequencySerializer(4, 16)
    src, dst = ser.band_grids(224, 224), ser.band_grids(512, 768)
    dim = 6
    parts = [torch.full((1, h * w, dim), float(b + 1)) for b, (h, w) in enumerate(src)]
    band_pos = torch.cat(parts, dim=1)  # (1, 255, D), band b holds the value b + 1
    cls = torch.full((1, 1, dim), -7.0)
    pos = torch.cat([band_pos[:, :127], cls, band_pos[:, 127:]], dim=1)
    out = resize_band_pos_embed(pos, src, dst)
    n = sum(h * w for h, w in dst)
    assert out.shape == (1, n + 1, dim)
    torch.testing.assert_close(out[:, n // 2], cls[:, 0])
    rest = torch.cat([out[:, :n // 2], out[:, n // 2 + 1:]], dim=1)
    for b, part in enumerate(rest.split([h * w for h, w in dst], dim=1)):
        torch.testing.assert_close(part, torch.full_like(part, b + 1.0))


def test_pos_embed_band_resize_is_bicubic_on_each_grid():
    ser = FrequencySerializer(4, 16)
    src, dst = ser.band_grids(224, 224), ser.band_grids(512, 512)
    pos = torch.randn(1, 256, 5)
    out = resize_band_pos_embed(pos, src, dst)
    band = torch.cat([pos[:, :127], pos[:, 128:]], 1)[:, 1 + 9 + 49:]  # the 14x14 band
    grid = band.reshape(1, 14, 14, 5).permute(0, 3, 1, 2)
    expect = F.interpolate(grid, size=(32, 32), mode='bicubic', align_corners=False)
    finest = torch.cat([out[:, :680], out[:, 681:]], 1)[:, 16 + 64 + 256:]
    torch.testing.assert_close(finest, expect.flatten(2).transpose(1, 2))
    assert resize_band_pos_embed(pos, src, src) is pos
