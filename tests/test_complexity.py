"""FLOP and parameter counts of the backbone against a hand count from the shapes.

Convention (mmengine): one multiply-add = 1 FLOP; element-wise ops (RMSNorm, SiLU, adds)
are not counted, LayerNorm is 5 per element, BatchNorm in eval 2 per element, bilinear
resize 4 per output element, conv bias not counted.
"""
import math

import pytest
import torch

from mmglobalmamba.analysis import (analyze_complexity, classifier_param_count,
                                    matmul_flop_jit, selective_scan_flops)
from mmglobalmamba.engine.config import build_backbone
from mmglobalmamba.models.layers import FrequencySerializer

# a small custom arch on a non-square image: 96 x 128, K = 4 bands
D, DEPTH, H, W, K, P = 32, 2, 96, 128, 4, 16
D_INNER, D_STATE, DT_RANK, D_CONV = 2 * D, 16, math.ceil(D / 16), 4
GRIDS = [(1, 1), (1, 2), (3, 4), (6, 8)]
N = sum(h * w for h, w in GRIDS)  # 63 band tokens
L = N + 1  # with cls


def _backbone():
    # out index 0 -> LN + stride-4 branch (deconv, BN, GELU, deconv); index 1 (last) ->
    # norm_f + max-pool. img_size = test size: pos_embed needs no resize.
    return build_backbone(dict(embed_dims=D, depth=DEPTH), img_size=(H, W),
                          out_indices=(0, 1), pyramid_strides=(4, 32))


def hand_flops(batch=1):
    C = 3
    f = {}
    # DCT: the largest low-pass block (rows, cols), only its triangle u/rows + v/cols < 1:
    # m_h (rows, H) @ x, then in 4 bands of rows, each as wide as the triangle there; then
    # band b = 0..K-2 read out from its (s_h, s_w) block straight at its token grid (h, w):
    # (P h, s_h) @ X in 4 bands of columns, each as high as the triangle, then @ (s_w, P w)
    blocks = [(H // 2 ** (K - 2 - b), W // 2 ** (K - 2 - b)) for b in range(K - 1)]
    assert blocks == FrequencySerializer(K, P).spectrum_blocks(H, W)
    rows, cols = max(b[0] for b in blocks), max(b[1] for b in blocks)

    def quarters(n):
        return [(n * i // 4, n * (i + 1) // 4) for i in range(4) if n * i // 4 < n * (i + 1) // 4]

    dct = rows * H * W
    dct += sum((u1 - u0) * W * math.ceil(cols * (rows - u0) / rows)
               for u0, u1 in quarters(rows))
    for (s_h, s_w), (h, w) in zip(blocks, GRIDS):
        dct += sum(P * h * math.ceil(s_h * (s_w - v0) / s_w) * (v1 - v0)
                   for v0, v1 in quarters(s_w))
        dct += P * h * s_w * P * w
    f['dct'] = batch * C * dct
    # one patch-embedding conv per band, each on its own token grid (no resize after it)
    f['patch_embed'] = sum(batch * D * C * P * P * h * w for h, w in GRIDS)
    per_block = (
        batch * L * D * 2 * D_INNER                      # in_proj
        + batch * D_INNER * D_CONV * (L + D_CONV - 1)    # depthwise conv1d (padded output)
        + batch * L * D_INNER * (DT_RANK + 2 * D_STATE)  # x_proj
        + batch * L * DT_RANK * D_INNER                  # dt_proj (weight; bias in scan)
        + batch * L * D_INNER * D                        # out_proj
        # selective scan: 5 per state element, and per (b, d, l): dt*u, +bias, softplus,
        # +D*u, gate (2)
        + batch * D_INNER * L * (5 * D_STATE + 6))
    f['blocks'] = DEPTH * per_block
    # outputs: LayerNorm at out index 0 (5 per element); index 1 uses norm_f (uncounted)
    f['out_norm'] = 5 * batch * L * D
    h, w = H // P, W // P
    f['deconv'] = (batch * D * D * 2 * 2 * h * w                # 2x2 s2 (per input pixel)
                   + batch * D * D * 2 * 2 * (2 * h) * (2 * w))  # second one
    f['bn'] = 2 * batch * D * (2 * h) * (2 * w)                  # BN, eval, affine
    return f



def hand_params():
    patch = D * 3 * P * P + D
    block = (D                                   # RMSNorm
             + D * 2 * D_INNER                   # in_proj
             + D_INNER * D_CONV + D_INNER        # conv1d weight + bias
             + D_INNER * (DT_RANK + 2 * D_STATE)  # x_proj
             + DT_RANK * D_INNER + D_INNER       # dt_proj weight + bias
             + D_INNER * D_STATE + D_INNER       # A_log, D
             + D_INNER * D)                      # out_proj
    pyramid = (D * D * 4 + D) + 2 * D + (D * D * 4 + D)  # deconv, BN, deconv
    return dict(embed=patch + D + L * D, blocks=DEPTH * block, norm_f=D, out_norm=2 * D,
                pyramid=pyramid)


def test_backbone_flops_match_hand_count():
    model = _backbone()
    res = analyze_complexity(model, (torch.randn(1, 3, H, W), ))
    f = hand_flops()
    by_op = res['flops_by_operator']
    assert by_op['matmul'] == f['dct']
    assert by_op['conv'] == (f['patch_embed'] + DEPTH * D_INNER * D_CONV * (L + D_CONV - 1)
                             + f['deconv'])
    assert by_op['selective_scan'] == DEPTH * D_INNER * L * (5 * D_STATE + 6)
    assert 'upsample_bilinear2d' not in by_op  # folded into the DCT read-out
    assert res['flops'] == sum(f.values()), (res['flops'], f, by_op)
    assert res['flops_by_module']['pyramid'] == f['deconv'] + f['bn']
    assert res['flops_by_module']['layers'] == f['blocks']


def test_backbone_params_match_hand_count():
    model = _backbone()
    p = hand_params()
    res = analyze_complexity(model, (torch.randn(1, 3, H, W), ))
    assert res['params'] == sum(p.values())
    assert res['params_by_module']['pyramid'] == p['pyramid']
    # as a classifier: no out norms / pyramid, plus a D -> 1000 head
    assert classifier_param_count(model) == (p['embed'] + p['blocks'] + p['norm_f']
                                             + D * 1000 + 1000)


def test_cpu_route_counts_the_same():
    """Traced as it runs on the CPU kernel (channels-last conv and scan as autograd
    Functions, dt_proj inside the scan), the model gives the hand count too."""
    from mmglobalmamba.ops import available_backends
    if 'cpu' not in available_backends():
        pytest.skip('the CPU kernel is not built')
    res = analyze_complexity(_backbone(), (torch.randn(1, 3, H, W), ), backend='cpu',
                             scan_node=False)
    assert res['flops_by_operator']['selective_scan'] == DEPTH * D_INNER * L * (5 * D_STATE + 6)
    assert res['flops'] == sum(hand_flops().values())
    assert not any('RowsFn' in op for op in res['skipped_ops'])


def test_scan_flops_formula():
    assert selective_scan_flops(2, 3, 5, 4) == 2 * 3 * 5 * (5 * 4 + 6)
    assert selective_scan_flops(1, 1, 1, 16, with_D=False, with_z=False,
                                with_delta_bias=False, delta_softplus=False) == 81


class _Shape:
    def __init__(self, shape):
        self.shape = shape

    def type(self):
        shape = self.shape

        class T:
            def sizes(self):
                return list(shape)
        return T()


@pytest.mark.parametrize('a,b,flops', [
    ((7, 20), (2, 3, 20, 12), 2 * 3 * 7 * 20 * 12),   # basis @ batched image (the DCT)
    ((2, 3, 7, 12), (12, 9), 2 * 3 * 7 * 12 * 9),
    ((4, 1, 5, 6), (3, 6, 2), 4 * 3 * 5 * 6 * 2),
    ((6, ), (6, 2), 6 * 2),
])
def test_matmul_handle_broadcasts(a, b, flops):
    assert matmul_flop_jit([_Shape(a), _Shape(b)], []) == flops
