"""Datasets this package generates (for the demo, tests and GPU checks)."""
from .synthetic import (SEG_CLASSES, SHAPES, encode_instance, make_coco_dataset,
                        make_seg_dataset, render_scene)

__all__ = ['SEG_CLASSES', 'SHAPES', 'encode_instance', 'make_coco_dataset', 'make_seg_dataset',
           'render_scene']
