"""Generate a small, learnable instance-segmentation dataset in the COCO layout.

The scenes are those of ``make_synthetic_seg.py`` (circles, squares and triangles whose class
shows in outline and texture, on noisy backgrounds; objects never overlap). Every object is
one instance with an exact mask, stored as compressed RLE, and the exact box of that mask
(``[x, y, w, h]`` covering the mask's pixels), so a perfect model would score AP 100.

Layout (what mmdet's ``CocoDataset`` reads)::

    OUT/train/000000.jpg ...   OUT/annotations/instances_train.json
    OUT/val/000000.jpg ...     OUT/annotations/instances_val.json

Usage: ``python tools/make_synthetic_coco.py --out data/synthetic_coco`` (seeded).
"""
import argparse
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from make_synthetic_seg import SHAPES, render_scene  # noqa: E402


def encode_instance(mask):
    """Exact compressed-RLE segmentation, area and box of a boolean mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    return rle, int(mask.sum()), bbox


def make_split(out, split, num, size, rng):
    img_dir = osp.join(out, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        img, objects = render_scene(rng, size)
        name = f'{i:06d}.jpg'
        cv2.imwrite(osp.join(img_dir, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i, file_name=name, height=size, width=size))
        for kind_idx, mask in objects:
            rle, area, bbox = encode_instance(mask)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i, category_id=kind_idx + 1,
                segmentation=rle, area=area, bbox=bbox, iscrowd=0))
    categories = [dict(id=k + 1, name=name, supercategory='shape')
                  for k, name in enumerate(SHAPES)]
    with open(osp.join(out, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return len(annotations)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/synthetic_coco')
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=48)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n_train = make_split(args.out, 'train', args.num_train, args.size, rng)
    n_val = make_split(args.out, 'val', args.num_val, args.size, rng)
    print(f'wrote {args.num_train} train images ({n_train} objects) and {args.num_val} val '
          f'images ({n_val} objects), {args.size}x{args.size}, classes {SHAPES}, to {args.out}')


if __name__ == '__main__':
    main()
