"""Random inputs for a built mmseg / mmdet model, without a dataset.

One builder of data samples serves every tool that runs a model on made-up data: config
checks (``test_step`` and a loss), train-step benchmarks (``train_step``), FLOP counting
and throughput (``mode='tensor'``). Images are random uint8, as a data loader gives them;
targets are random but valid (a label map, or 1-3 boxes with rectangular masks), so that
every head runs its real loss.
"""
import torch
import torch.nn as nn

__all__ = ['TASKS', 'synthetic_samples', 'synthetic_batch', 'TensorForward']

TASKS = ('seg', 'det')


def _meta(H, W):
    return dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                batch_input_shape=(H, W), scale_factor=(1.0, 1.0), flip=False,
                flip_direction=None, img_id=0)


def _seg_sample(H, W, num_classes, with_gt, gen):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(_meta(H, W), reduce_zero_label=False))
    if with_gt:
        labels = torch.randint(0, num_classes, (1, H, W), generator=gen)
        sample.gt_sem_seg = PixelData(data=labels)
    return sample


def _det_sample(H, W, num_classes, with_gt, gen):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=_meta(H, W))
    if with_gt:
        n = int(torch.randint(1, 4, (1, ), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([W / 2, H / 2])
        wh = (0.2 + 0.3 * torch.rand(n, 2, generator=gen)) * torch.tensor([W, H])
        boxes = torch.cat([xy, xy + wh], 1).floor()                      # inside the image
        masks = torch.zeros(n, H, W, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.randint(0, num_classes, (n, ), generator=gen),
            masks=BitmapMasks(masks.numpy(), H, W))
        sample.gt_ignore_instances = InstanceData(
            bboxes=torch.zeros((0, 4)), labels=torch.zeros((0, ), dtype=torch.long))
    return sample


def synthetic_samples(task, shape, batch=1, num_classes=2, with_gt=True, seed=0):
    """``batch`` data samples for images of ``shape`` (H, W): ``task`` 'seg'
    (``SegDataSample``, label map) or 'det' (``DetDataSample``, boxes and masks)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    H, W = shape
    gen = torch.Generator().manual_seed(seed)
    make = _seg_sample if task == 'seg' else _det_sample
    return [make(H, W, num_classes, with_gt, gen) for _ in range(batch)]


def synthetic_batch(task, shape, batch=1, num_classes=2, with_gt=True, seed=0):
    """A data-loader batch (``dict(inputs, data_samples)``) for ``train_step`` /
    ``test_step``: ``batch`` random uint8 (3, H, W) images and their samples."""
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = [torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=gen)
              for _ in range(batch)]
    return dict(inputs=inputs, data_samples=synthetic_samples(
        task, shape, batch, num_classes, with_gt, seed))


class TensorForward(nn.Module):
    """``model(inputs, samples, mode='tensor')`` as a one-tensor forward (backbone, neck
    and heads; mmdet's RoI head on the RPN proposals), for tracing, timing and ONNX export.
    Its samples: None for mmseg, :func:`synthetic_samples` of ``shape`` without targets for
    mmdet."""

    def __init__(self, model, task, shape=None, batch=1):
        super().__init__()
        self.model = model  # attribute name kept short: module names read 'model.backbone'
        self._samples = None if task == 'seg' else synthetic_samples(
            task, shape, batch, with_gt=False)

    def forward(self, inputs):
        out = self.model(inputs, self._samples, mode='tensor')
        return tuple(out) if isinstance(out, (list, tuple)) else out
