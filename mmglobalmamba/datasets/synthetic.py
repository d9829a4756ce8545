"""Small, learnable, seeded datasets of textured shapes in the ADE20K and COCO layouts.

Each image shows 1-4 non-overlapping shapes (circle, square, triangle) on a noisy background.
A shape's class is visible twice: in its outline and in a class-specific texture
(circle: horizontal stripes, square: checkerboard, triangle: diagonal stripes); colours are
random so that colour alone says nothing. Labels and masks are exact (the same pixel test
draws the image and the label), so a perfect model scores 100.

Segmentation (what ``ADE20KDataset`` / ``BaseSegDataset`` reads)::

    OUT/images/training/000000.jpg      OUT/annotations/training/000000.png
    OUT/images/validation/000000.jpg    OUT/annotations/validation/000000.png

Label values follow ADE20K's ``reduce_zero_label`` convention: 0 is "unlabelled" (ignored),
1 = background, 2 = circle, 3 = square, 4 = triangle; after reduction the model sees
0..3 = ('background', 'circle', 'square', 'triangle').

Instances (what mmdet's ``CocoDataset`` reads), one instance per object with a compressed
RLE mask and the exact box of that mask (``[x, y, w, h]``)::

    OUT/train/000000.jpg ...   OUT/annotations/instances_train.json
    OUT/val/000000.jpg ...     OUT/annotations/instances_val.json
"""
import json
import os
import os.path as osp

import cv2
import numpy as np

__all__ = ['SHAPES', 'SEG_CLASSES', 'render_scene', 'encode_instance', 'make_seg_dataset',
           'make_coco_dataset']

SHAPES = ('circle', 'square', 'triangle')
SEG_CLASSES = ('background', ) + SHAPES


def _texture(kind, size, rng):
    """A (size, size) texture in [0, 1] that identifies the shape class."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(5.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 'circle':  # horizontal stripes
        tex = 0.5 + 0.5 * np.sin(2 * np.pi * yy / period + phase)
    elif kind == 'square':  # checkerboard
        cell = int(rng.integers(3, 5))
        tex = ((yy // cell + xx // cell) % 2).astype(np.float32)
    else:  # diagonal stripes
        tex = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) / (period * 1.2) + phase)
    return tex


def _shape_mask(kind, size, cx, cy, r, angle):
    """Boolean (size, size) mask of a shape centred at (cx, cy) with radius r."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if kind == 'circle':
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    if kind == 'square':  # axis-aligned, half side r * 0.8
        h = r * 0.8
        return (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    # triangle: three vertices on a circle of radius 1.3 r (about the area of the square),
    # rotated by angle
    ang = angle + np.array([0., 2 * np.pi / 3, 4 * np.pi / 3])
    vx, vy = cx + 1.3 * r * np.cos(ang), cy + 1.3 * r * np.sin(ang)
    inside = np.ones((size, size), bool)
    for i in range(3):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % 3], vy[(i + 1) % 3]
        # keep the side of the edge that holds the centre
        side = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        ref = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
        inside &= side * np.sign(ref) >= 0
    return inside


def render_scene(rng, size=128, min_objects=1, max_objects=4, min_radius=0.125, max_radius=0.234375):
    """Draw one scene.

    Radii are fractions of ``size`` (16 to 30 pixels at 128).

    Returns:
        image (size, size, 3) uint8 BGR, and a list of ``(shape_index, mask)`` with
        ``shape_index`` into :data:`SHAPES` and ``mask`` a boolean (size, size) array.
        Objects never overlap, so every mask is the object's full, visible extent.
    """
    # background: smooth random colour gradient plus pixel noise
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c0 * (1 - t) + c1 * t
    img = img + rng.normal(0, 18, img.shape)

    objects = []
    occupied = np.zeros((size, size), bool)
    n_obj = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(50):  # rejection sampling for non-overlapping placement
        if len(objects) == n_obj:
            break
        kind_idx = int(rng.integers(len(SHAPES)))
        kind = SHAPES[kind_idx]
        r = rng.uniform(min_radius, max_radius) * size
        margin = 1.3 * r if kind == 'triangle' else r
        cx, cy = rng.uniform(margin, size - margin, 2)
        mask = _shape_mask(kind, size, cx, cy, r, rng.uniform(0, 2 * np.pi))
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if mask.sum() < 0.003 * size * size or (grown & occupied).any():
            continue
        occupied |= mask
        tex = _texture(kind, size, rng)[..., None]
        dark, light = rng.uniform(0, 110, 3), rng.uniform(145, 255, 3)
        fill = dark * (1 - tex) + light * tex
        img[mask] = fill[mask] + rng.normal(0, 8, (int(mask.sum()), 3))
        objects.append((kind_idx, mask))
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _make_seg_split(out, split, num, size, rng):
    img_dir = osp.join(out, 'images', split)
    ann_dir = osp.join(out, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(num):
        img, objects = render_scene(rng, size)
        label = np.ones((size, size), np.uint8)  # 1 = background
        for kind_idx, mask in objects:
            label[mask] = kind_idx + 2
        name = f'{i:06d}'
        cv2.imwrite(osp.join(img_dir, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(osp.join(ann_dir, name + '.png'), label)


def encode_instance(mask):
    """Exact compressed-RLE segmentation, area and box of a boolean mask."""
    from pycocotools import mask as mask_utils  # mmdet's dependency, not ours
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    return rle, int(mask.sum()), bbox


def _make_coco_split(out, split, num, size, rng):
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


def make_seg_dataset(out, num_train=256, num_val=48, size=128, seed=0):
    """Write a seeded segmentation dataset (ADE20K layout) of ``size`` x ``size`` images."""
    rng = np.random.default_rng(seed)
    _make_seg_split(out, 'training', num_train, size, rng)
    _make_seg_split(out, 'validation', num_val, size, rng)
    return out


def make_coco_dataset(out, num_train=256, num_val=48, size=128, seed=1,
                      splits=('train', 'val')):
    """Write a seeded instance dataset (COCO layout); returns (train, val) object counts.
    ``splits`` names the two image folders and annotation files (COCO 2017 itself uses
    ``('train2017', 'val2017')``)."""
    rng = np.random.default_rng(seed)
    n_train = _make_coco_split(out, splits[0], num_train, size, rng)
    n_val = _make_coco_split(out, splits[1], num_val, size, rng)
    return n_train, n_val
