"""Per-band resizing of a cls-aware absolute position embedding (docs/algorithm.md 2.7).

The embedding is stored at the pretraining layout: band tokens of the pretraining grids with
the cls entry at index N0 // 2. For another input size each band's slice is resized on its
own, so a band's positions stay that band's positions.
"""
import torch
import torch.nn.functional as F


def insert_middle_cls(tokens, cls):
    """(B, N, D) band tokens + (B, 1, D) cls -> (B, N + 1, D) with cls at index N // 2."""
    n = tokens.shape[1] // 2
    return torch.cat([tokens[:, :n], cls, tokens[:, n:]], dim=1)


def split_middle_cls(seq):
    """Inverse of :func:`insert_middle_cls`: (B, N + 1, D) -> (band tokens, cls)."""
    c = (seq.shape[1] - 1) // 2
    return torch.cat([seq[:, :c], seq[:, c + 1:]], dim=1), seq[:, c:c + 1]


def resize_band_pos_embed(pos_embed, src_grids, dst_grids, mode='bicubic'):
    """Resize pos_embed (1, N0 + 1, D) from ``src_grids`` to ``dst_grids`` -> (1, N + 1, D).

    The cls entry sits at N0 // 2 in the source and is re-inserted at N // 2.
    """
    src_grids = [tuple(g) for g in src_grids]
    dst_grids = [tuple(g) for g in dst_grids]
    n_src = sum(h * w for h, w in src_grids)
    if pos_embed.shape[1] != n_src + 1:
        raise ValueError(f'pos_embed has {pos_embed.shape[1]} entries but the grids '
                         f'{src_grids} need {n_src} + 1 (cls)')
    if len(src_grids) != len(dst_grids):
        raise ValueError(f'cannot map {len(src_grids)} bands onto {len(dst_grids)}')
    if src_grids == dst_grids:
        return pos_embed
    dim = pos_embed.shape[2]
    band_pos, cls_pos = split_middle_cls(pos_embed)  # (1, N0, D), (1, 1, D)
    parts = []
    for part, (h0, w0), (h, w) in zip(
            band_pos.split([h * w for h, w in src_grids], dim=1), src_grids, dst_grids):
        if (h0, w0) != (h, w):
            grid = part.reshape(1, h0, w0, dim).permute(0, 3, 1, 2)  # (1, D, h0, w0)
            grid = F.interpolate(grid.float(), size=(h, w), mode=mode, align_corners=False)
            part = grid.to(pos_embed.dtype).flatten(2).transpose(1, 2)  # (1, h * w, D)
        parts.append(part)
    return insert_middle_cls(torch.cat(parts, dim=1), cls_pos)  # (1, N + 1, D)
