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


def _seg_sample(h, w, num_classes, with_gt, seed):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    if with_gt:
        gen = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, num_classes, (1, h, w), generator=gen)
        sample.gt_sem_seg = PixelData(data=labels)
    return sample


def _det_sample(h, w, num_classes, with_gt):
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), img_id=0))
    if with_gt:
        x0, y0, x1, y1 = w // 4, h // 4, 3 * w // 4, 3 * h // 4
        mask = np.zeros((1, h, w), np.uint8)
        mask[0, y0:y1, x0:x1] = 1
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
            labels=torch.tensor([min(1, num_classes - 1)]),
            masks=BitmapMasks(mask, h, w))
        sample.gt_ignore_instances = InstanceData(
            bboxes=torch.zeros((0, 4)), labels=torch.zeros((0, ), dtype=torch.long))
    return sample


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
    num_classes = _num_classes(cfg)
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)

    def make_data(with_gt, batch=1):
        # training runs two images: BN after the 1x1 pooling of PPM needs more than one value
        if scope == 'mmseg':
            samples = [_seg_sample(h, w, num_classes, with_gt, seed + i) for i in range(batch)]
        else:
            samples = [_det_sample(h, w, num_classes, with_gt) for _ in range(batch)]
        return dict(inputs=[image.clone() for _ in range(batch)], data_samples=samples)

    report = {}
    model.eval()
    with torch.no_grad():
        (pred, ) = model.test_step(make_data(False))
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
        data = model.data_preprocessor(make_data(True, batch=2), True)
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
