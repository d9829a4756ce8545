"""Build a config's model and run it once on CPU, without data or weights.

Catches configs that no longer build (renamed keys, wrong channel counts, a backbone output
that the neck or head does not accept) in seconds: one test step on a random image and,
optionally, one training forward + backward on two. SyncBN becomes BN; pretrained weights
are not loaded (the model keeps its random init). ``tools/check_config.py`` is the command
line.
"""
import time

import torch

from mmglobalmamba.engine.config import build_model_on_cpu
from mmglobalmamba.engine.synthetic_batch import synthetic_batch


def _num_classes(cfg):
    model = cfg.model
    if 'decode_head' in model:
        return model.decode_head.num_classes
    return model.roi_head.bbox_head.num_classes


def check_model(model, cfg, shape=(64, 64), loss=False, seed=0):
    """Run ``test_step`` on one random image (and with ``loss`` a training forward+backward
    on two).

    Returns a dict with the predictions' summary and, with ``loss``, the loss values.
    """
    h, w = shape
    scope = cfg.default_scope
    task = 'seg' if scope == 'mmseg' else 'det'
    num_classes = _num_classes(cfg)
    report = {}
    model.eval()
    with torch.no_grad():
        (pred, ) = model.test_step(synthetic_batch(task, shape, 1, num_classes, False, seed))
    if scope == 'mmseg':
        seg = pred.pred_sem_seg.data
        assert seg.shape[-2:] == (h, w), f'prediction {tuple(seg.shape)} for a {h}x{w} input'
        report['pred_sem_seg'] = tuple(seg.shape)
    else:
        inst = pred.pred_instances
        assert inst.bboxes.shape[-1] == 4
        report['pred_instances'] = len(inst)
        if 'masks' in inst and len(inst):
            assert tuple(inst.masks.shape[-2:]) == (h, w)
    if loss:
        model.train()
        # two images: BN after the 1x1 pooling of PPM needs more than one value
        data = model.data_preprocessor(synthetic_batch(task, shape, 2, num_classes, True, seed),
                                       True)
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total), f'non-finite loss {losses}'
        total.backward()
        report['loss'] = float(total)
    return report


def check_config(cfg, shape=(128, 128), loss=False, seed=0):
    """Build ``cfg``'s model and run it once at ``shape``; returns a one-line summary."""
    if cfg.model.get('data_preprocessor', {}).get('size') is not None:
        cfg.model.data_preprocessor.size = tuple(shape)  # training-time padding target
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model_on_cpu(cfg, pretrained=False)
    n_params = sum(p.numel() for p in model.parameters())
    report = check_model(model, cfg, tuple(shape), loss=loss, seed=seed)
    return (f'{type(model).__name__} with {type(model.backbone).__name__} '
            f'({n_params / 1e6:.1f}M params) ok at {shape[0]}x{shape[1]}: {report} '
            f'in {time.perf_counter() - start:.1f}s')
