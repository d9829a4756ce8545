"""Config -> model -> ONNX file: the segmentor in tensor mode or the backbone alone.

* segmentor (mmseg): normalized image (batch, 3, H, W) in, ``logits`` out, the decode
  head's class logits at 1/4 of the input resolution (what mmseg resizes to the image
  before its argmax; :class:`~mmglobalmamba.deploy.runtime.OnnxSegmentor` does the same);
* backbone (``backbone_only``, also for mmdet detectors): image in, one feature map per
  ``out_indices`` out (``features_0`` ...).

Shapes are static (the band grids depend on H and W). Every mixer's scan goes through the
placeholder op of :mod:`.scan_op` and is expanded into the Scan graph of :mod:`.onnx_scan`,
so the file holds default-domain ONNX ops only. ``onnx.checker`` runs on every file.
"""
import json
import os
import os.path as osp
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .onnx_scan import DEFAULT_STEPS, expand_placeholders
from .runtime import METADATA_PREFIX
from .scan_op import onnx_scan_substitute, translation_table

__all__ = ['ExportError', 'ExportResult', 'load_config', 'build_export_model',
           'load_checkpoint_strict', 'export_module', 'export_config', 'count_nodes',
           'segmentor_metadata', 'preprocess_metadata', 'DETECTOR_MESSAGE']

DETECTOR_MESSAGE = (
    '{config} is an mmdet detector: its full export would need NMS and RoIAlign, which are '
    'mmcv ops (mmcv.ops.nms / roi_align) with no default-domain ONNX form here; export the '
    'backbone with --backbone-only (image in, the out_indices feature maps out) and run the '
    'detector head where mmcv is available')


class ExportError(ValueError):
    """The export cannot be done as asked; the message says what to change."""


@dataclass
class ExportResult:
    """What one export wrote and what it cost."""
    path: str
    kind: str                   # 'segmentor' or 'backbone'
    seconds: float              # trace + convert + expand + check + save
    nodes: int                  # nodes of the main graph
    nodes_total: int            # including the Scan bodies
    scans: int                  # Scan graphs (one per mixer direction)
    bytes: int
    input_shape: tuple
    output_shapes: dict = field(default_factory=dict)


def load_config(path):
    """An mmengine Config from a file, with a clear error for a missing file."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise ExportError(f'config file {path} does not exist')
    return Config.fromfile(path)


class BackboneFeatures(nn.Module):
    """The backbone alone: image -> tuple of its out_indices feature maps."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, image):
        return tuple(self.backbone(image))


def _name_keys(keys, limit=10):
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f' ... ({len(keys)} in all)' if len(keys) > limit else '')


def load_checkpoint_strict(module, checkpoint, prefix=None):
    """Load a checkpoint into ``module`` requiring every key to fit: missing, unexpected
    and shape-clashing keys are an :class:`ExportError` that names them (exporting a
    model with silently random weights is never wanted). ``prefix`` selects a sub-module's
    keys of a full-model checkpoint ('backbone.')."""
    from mmglobalmamba.models.backbones.checkpoint import read_state_dict
    state = read_state_dict(checkpoint)                       # torch.load(weights_only=True)
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    clashes = [f'{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})'
               for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or clashes:
        parts = []
        if clashes:
            parts.append(f'shape mismatches: {_name_keys(clashes)}')
        if missing:
            parts.append(f'missing from the checkpoint: {_name_keys(missing)}')
        if unexpected:
            parts.append(f'not in the model: {_name_keys(unexpected)}')
        hint = ('check that the config (arch, serialization, bimamba, num_classes) is the one '
                'the checkpoint was trained with')
        if prefix is None and not any(k.startswith(('backbone.', 'decode_head.'))
                                      for k in state):
            hint += ('; a backbone or classifier checkpoint goes into the config '
                     "(init_cfg=dict(type='Pretrained', ...)) or with --backbone-only")
        raise ExportError(f'checkpoint {checkpoint} does not fit the model: '
                          + '; '.join(parts) + f' ({hint})')
    module.load_state_dict(state, strict=True)


def build_export_model(cfg, checkpoint=None, backbone_only=False, config_name='config'):
    """The module to export, in eval mode, and its kind ('segmentor' or 'backbone').

    Without ``checkpoint`` the weights are the config's random init (pretrained files are
    not read): for trying the export and timing it. Detectors need ``backbone_only``."""
    from mmglobalmamba.engine.config import build_model_on_cpu, config_scope
    from mmglobalmamba.engine.synthetic_batch import TensorForward
    scope = config_scope(cfg)
    if scope == 'mmdet' and not backbone_only:
        raise ExportError(DETECTOR_MESSAGE.format(config=config_name))
    model = build_model_on_cpu(cfg, pretrained=False)  # random init as built
    if backbone_only:
        module, kind = BackboneFeatures(model.backbone), 'backbone'
        if checkpoint is not None:
            load_checkpoint_strict(model.backbone, checkpoint, prefix='backbone.')
    else:
        # tensor mode: normalized image -> decode-head logits (batch, classes, H / 4, W / 4)
        module, kind = TensorForward(model, 'seg'), 'segmentor'
        if checkpoint is not None:
            load_checkpoint_strict(model, checkpoint)
    return module.eval(), kind


def backbone_of(module):
    return module.backbone if isinstance(module, BackboneFeatures) \
        else module.model.backbone


def check_export_shape(module, height, width):
    """The backbone's own size check: its ValueError and message for too small a shape
    (a model that still cannot run at the shape fails in ``export_module``)."""
    backbone = backbone_of(module)
    backbone.serializer.check_size(height, width)          # raises the backbone's ValueError


def count_nodes(graph):
    """(main-graph nodes, nodes including every subgraph, Scan nodes)."""
    total, scans = 0, 0
    for node in graph.node:
        total += 1
        scans += node.op_type == 'Scan'
        for attr in node.attribute:
            if attr.g.node:
                sub_total, sub_scans = count_nodes(attr.g)[1:]
                total, scans = total + sub_total, scans + sub_scans
    return len(graph.node), total, scans


def preprocess_metadata(cfg):
    """The data preprocessor's normalization (mean, std, channel order), for the runtime."""
    pre = cfg.model.get('data_preprocessor') or {}
    return dict(mean=[float(v) for v in pre.get('mean') or [0.0, 0.0, 0.0]],
                std=[float(v) for v in pre.get('std') or [1.0, 1.0, 1.0]],
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)))


def segmentor_metadata(cfg):
    """Normalization and class names of a segmentor config, for the runtime."""
    meta = dict(preprocess_metadata(cfg), classes=None)
    try:
        from mmseg.registry import DATASETS
        dataset = DATASETS.get(cfg.test_dataloader.dataset.type)
        classes = dataset.METAINFO.get('classes')
        if classes is not None and len(classes) == cfg.model.decode_head.num_classes:
            meta['classes'] = list(classes)
    except (AttributeError, KeyError, TypeError):
        pass  # a config without a dataset: class ids only
    return meta


def export_module(module, inputs, path, metadata, steps=DEFAULT_STEPS):
    """Trace ``module`` at ``inputs`` with the placeholder scan, expand the scans, store
    ``metadata`` (JSON values under ``mmglobalmamba.``), check and save. -> ExportResult."""
    import onnx
    if steps < 1:
        raise ExportError(f'scan steps per iteration must be >= 1, got {steps}')
    kind = metadata['kind']
    # The eager forward also fills the serializer's size caches (DCT bases, readouts) with
    # real tensors before tracing, so that the trace reads them as constants.
    height, width = inputs.shape[-2:]
    try:
        with torch.no_grad():
            outputs = module(inputs)
    except (RuntimeError, ValueError) as err:
        raise ExportError(f'the model cannot run at {height}x{width} (batch '
                          f'{inputs.shape[0]}): {err}; choose a larger --shape') from err
    outputs = outputs if isinstance(outputs, tuple) else (outputs, )
    output_names = ['logits'] if kind == 'segmentor' else \
        [f'features_{i}' for i in range(len(outputs))]
    start = time.perf_counter()
    with onnx_scan_substitute(), torch.no_grad():
        program = torch.onnx.export(module, (inputs, ), dynamo=True, verbose=False,
                                    custom_translation_table=translation_table(),
                                    input_names=['image'], output_names=output_names)
    model = program.model_proto
    scans = expand_placeholders(model, steps=steps)
    if scans == 0:
        raise RuntimeError('no selective scan reached the ONNX substitute; is this a '
                           'GlobalMamba model?')
    metadata = dict(metadata, scan_steps=steps,
                    input_shape=list(inputs.shape), outputs=output_names)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    onnx.save(model, path)
    seconds = time.perf_counter() - start
    nodes, total, scan_nodes = count_nodes(model.graph)
    return ExportResult(path=path, kind=kind, seconds=seconds, nodes=nodes,
                        nodes_total=total, scans=scan_nodes, bytes=osp.getsize(path),
                        input_shape=tuple(inputs.shape),
                        output_shapes={n: tuple(o.shape) for n, o in zip(output_names, outputs)})


def example_inputs(batch, height, width, seed=0):
    """A normalized-image-like input (batch, 3, H, W) for tracing."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


def export_config(config, shape, out, checkpoint=None, backbone_only=False, batch=1,
                  steps=DEFAULT_STEPS, cfg=None):
    """Export a config's segmentor (or backbone) at ``shape`` (H, W). Returns
    ``(ExportResult, module)``; the module is the PyTorch model that was exported."""
    cfg = cfg if cfg is not None else load_config(config)
    height, width = shape
    if batch < 1:
        raise ExportError(f'--batch must be >= 1, got {batch}')
    module, kind = build_export_model(cfg, checkpoint, backbone_only, config_name=config)
    check_export_shape(module, height, width)
    inputs = example_inputs(batch, height, width)
    metadata = dict(kind=kind, config=osp.basename(config))
    metadata.update(segmentor_metadata(cfg) if kind == 'segmentor'
                    else preprocess_metadata(cfg))
    return export_module(module, inputs, out, metadata, steps=steps), module
