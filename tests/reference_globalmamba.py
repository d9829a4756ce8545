"""An independent, straightforward implementation of the released GlobalMamba classifier
(docs/algorithm.md, section 2), used by the tests as ground truth.

It shares no code with the package: scipy DCTs with torch_dct's norm=None scaling, masks
built as the authors did (triu + rot90 + zero padding, square images only), a causal conv
by explicit taps and a selective scan as a Python loop over the sequence.
"""
import scipy.fft
import torch
import torch.nn.functional as F


def released_masks(img_size, K=4):
    """The authors' band masks for a square image: (K - 1) x (S, S) 0/1 tensors."""
    masks = []
    for b in range(K - 1):
        s = img_size // 2 ** (K - 2 - b)
        tri = torch.rot90(torch.triu(torch.ones(s, s)), 1, [0, 1])  # 1 where u + v <= s - 1
        masks.append(F.pad(tri, (0, img_size - s, 0, img_size - s)))
    return masks


def dct2_none(x):
    """Unnormalized 2-D DCT-II (torch_dct.dct_2d with norm=None uses the same scaling)."""
    return scipy.fft.dctn(x, type=2, axes=(-2, -1))


def idct2_none(X):
    return scipy.fft.idctn(X, type=2, axes=(-2, -1))


def released_band_images(x, K=4):
    """x: (B, C, S, S) float64 tensor -> K band images (the last is x)."""
    S = x.shape[-1]
    spec = dct2_none(x.numpy())
    images = [torch.from_numpy(idct2_none(spec * m.numpy())) for m in released_masks(S, K)]
    return images + [x]


def released_tokens(x, proj_weight, proj_bias, K=4, patch=16):
    """Band tokens (B, N, D) of a square image, low to high frequency."""
    S = x.shape[-1]
    tokens = []
    for b, image in enumerate(released_band_images(x.double(), K)):
        feat = F.conv2d(image.float(), proj_weight, proj_bias, stride=patch)
        g = int((S // 2 ** (K - 1 - b)) / patch)
        feat = F.interpolate(feat, size=(g, g), mode='bilinear', align_corners=False)
        tokens.append(feat.flatten(2).transpose(1, 2))
    return torch.cat(tokens, dim=1)


def loop_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """The shared float64 loop (tests/loop_reference.py) with softplus, in u's dtype:
    u, delta, z (b, d, L); A (d, n); B, C (b, n, L)."""
    from loop_reference import loop_selective_scan as loop
    return loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True).to(u.dtype)


def rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def mixer(h, sd, p):
    """mamba_simple's slow path, written out. h: (B, L, D)."""
    d_inner = sd[p + 'in_proj.weight'].shape[0] // 2
    xz = (h @ sd[p + 'in_proj.weight'].T).transpose(1, 2)  # (B, 2 * d_inner, L)
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    w, bias = sd[p + 'conv1d.weight'][:, 0], sd[p + 'conv1d.bias']  # (d_inner, k)
    k, L = w.shape[1], x.shape[2]
    xpad = F.pad(x, (k - 1, 0))
    x = sum(w[None, :, j, None] * xpad[:, :, j:j + L] for j in range(k)) + bias[None, :, None]
    x = F.silu(x)
    dbc = x.transpose(1, 2) @ sd[p + 'x_proj.weight'].T  # (B, L, r + 2n)
    n = sd[p + 'A_log'].shape[1]
    r = dbc.shape[-1] - 2 * n
    dt, Bm, Cm = dbc[..., :r], dbc[..., r:r + n], dbc[..., r + n:]
    dt = (dt @ sd[p + 'dt_proj.weight'].T).transpose(1, 2)  # (B, d_inner, L)
    y = loop_selective_scan(x, dt, -torch.exp(sd[p + 'A_log']), Bm.transpose(1, 2),
                            Cm.transpose(1, 2), sd[p + 'D'], z, sd[p + 'dt_proj.bias'])
    return y.transpose(1, 2) @ sd[p + 'out_proj.weight'].T


def released_forward(x, sd, depth=24, K=4):
    """Final features of the released classifier: norm_f(residual + hidden), (B, N + 1, D)."""
    tokens = released_tokens(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], K)
    B, N, D = tokens.shape
    pos = N // 2
    tokens = torch.cat([tokens[:, :pos], sd['cls_token'].expand(B, -1, -1), tokens[:, pos:]], 1)
    hidden = tokens + sd['pos_embed']
    residual = None
    for i in range(depth):  # Vim's deferred residual add
        residual = hidden if residual is None else residual + hidden
        hidden = mixer(rms_norm(residual, sd[f'layers.{i}.norm.weight']), sd, f'layers.{i}.mixer.')
    return rms_norm(residual + hidden, sd['norm_f.weight'])


def released_checkpoint(state_dict, num_classes=1000):
    """Wrap backbone weights in the released classifier's file layout (docs/algorithm.md 5)."""
    import argparse
    model = {k: v.clone() for k, v in state_dict.items()
             if not k.startswith(('out_norms.', 'pyramid.'))}
    dim = model['norm_f.weight'].shape[0]
    model['head.weight'] = torch.randn(num_classes, dim) * 0.02
    model['head.bias'] = torch.zeros(num_classes)
    return {'model': model, 'optimizer': {'state': {}, 'param_groups': []}, 'epoch': 299,
            'args': argparse.Namespace(model='globalmamba_tiny', input_size=224, lr=5e-4)}


def randomize_(state_dict, seed=0):
    """Give every parameter non-trivial values (norm scales, D, A) so tests see them."""
    g = torch.Generator().manual_seed(seed)
    for k, v in state_dict.items():
        if not v.is_floating_point():
            continue
        if k.endswith(('norm.weight', 'norm_f.weight', '.D')):
            v.copy_(1 + 0.2 * torch.randn(v.shape, generator=g))
        elif k.endswith('A_log'):
            v.add_(0.1 * torch.randn(v.shape, generator=g))
        elif k in ('pos_embed', 'cls_token') or k.endswith('bias'):
            v.add_(0.02 * torch.randn(v.shape, generator=g))
    return state_dict
