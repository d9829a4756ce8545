"""Reading GlobalMamba / Vim checkpoints into the dense-prediction backbone.

Accepted files (all loaded with ``weights_only=True``; nothing in them is executed):

* the released classifier format (docs/algorithm.md 5): weights under ``'model'`` next to
  ``'optimizer'``, ``'epoch'`` and an ``argparse.Namespace`` in ``'args'``; the ``head`` is
  dropped and ``pos_embed`` is resized per band to the backbone's layout;
* mmengine checkpoints of our own models (``'state_dict'``), with ``prefix='backbone.'``;
* a bare state dict.

The backbone's ``init_weights`` and ``tools/convert_checkpoint.py`` share this code.
"""
from collections import OrderedDict

import torch
from mmengine.logging import MMLogger, print_log

from mmglobalmamba.checkpoint_safety import safe_torch_load
from ..layers import resize_band_pos_embed

DROPPED_PREFIXES = ('head.', 'head_dist.')


class CheckpointMismatchError(ValueError):
    """A checkpoint tensor cannot be placed in the model."""


def read_state_dict(checkpoint):
    """The weights of a checkpoint file (or an already loaded dict) as an OrderedDict."""
    ckpt = safe_torch_load(checkpoint) if isinstance(checkpoint, str) else checkpoint
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(
            f'checkpoint holds a {type(ckpt).__name__}, not a dict of weights')
    for key in ('model', 'state_dict', 'module'):
        if isinstance(ckpt.get(key), dict):
            return OrderedDict(ckpt[key])
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return OrderedDict(ckpt)
    raise CheckpointMismatchError(
        f"no weights found in checkpoint (keys: {sorted(ckpt)[:8]}): expected the released "
        "format ({'model': ...}), an mmengine checkpoint ({'state_dict': ...}) or a bare "
        'state dict')


def _infer_pos_grids(model, length):
    """The band grids of the pretraining layout that gives a pos_embed of ``length``."""
    if sum(h * w for h, w in model.pretrain_grids) + 1 == length:
        return model.pretrain_grids
    patch = model.serializer.patch_size
    for side in range(patch, 4096 + 1, patch):  # square pretraining sizes
        grids = model.serializer.band_grids(side, side)
        if sum(h * w for h, w in grids) + 1 == length:
            return grids
    return None


def adapt_state_dict(state_dict, model, prefix=None):
    """Map checkpoint weights onto ``model`` (a GlobalMamba backbone).

    Returns ``(state_dict, report)`` where report lists ``kept``, ``dropped``, ``resized``,
    ``missing`` and ``unexpected`` keys. Shape clashes raise :class:`CheckpointMismatchError`.
    """
    if prefix:
        picked = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                             if k.startswith(prefix))
        if not picked:
            raise CheckpointMismatchError(
                f'no key of the checkpoint starts with prefix {prefix!r} (first keys: '
                f'{list(state_dict)[:5]}); drop the prefix for a classifier checkpoint')
        state_dict = picked
    state_dict = OrderedDict((k[7:] if k.startswith('module.') else k, v)
                             for k, v in state_dict.items())
    own = model.state_dict()
    report = dict(kept=[], dropped=[], resized=[], missing=[], unexpected=[])
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES):
            report['dropped'].append(key)
            continue
        if key not in own:
            report['unexpected'].append(key)
            continue
        target = own[key].shape
        if key == 'pos_embed' and value.shape != target and value.dim() == 3 \
                and value.shape[2] == target[2]:
            src_grids = _infer_pos_grids(model, value.shape[1])
            if src_grids is None:
                raise CheckpointMismatchError(
                    f'pos_embed of the checkpoint has {value.shape[1]} entries, which is no '
                    f'square pretraining layout of this serializer; the model expects '
                    f'{tuple(target)}')
            value = resize_band_pos_embed(value, src_grids, model.pretrain_grids)
            report['resized'].append(f'pos_embed {tuple(state_dict[key].shape)} -> '
                                     f'{tuple(value.shape)}')
        if value.shape != target:
            hint = ''
            if key == 'patch_embed.proj.weight' or value.dim() >= 1 and \
                    value.shape[-1] != target[-1]:
                hint = (f' (the model has embed_dims={model.embed_dims}; pick the arch that '
                        'matches the checkpoint, e.g. tiny=192, small=384)')
            raise CheckpointMismatchError(
                f'shape mismatch for {key!r}: checkpoint {tuple(value.shape)} vs model '
                f'{tuple(target)}{hint}')
        out[key] = value
        report['kept'].append(key)
    report['missing'] = [k for k in own if k not in out]
    return out, report


def load_pretrained(model, checkpoint, prefix=None, logger=None):
    """Load a checkpoint into a GlobalMamba backbone and log what happened."""
    logger = logger or MMLogger.get_current_instance()
    state_dict, report = adapt_state_dict(read_state_dict(checkpoint), model, prefix)
    model.load_state_dict(state_dict, strict=False)
    print_log(f'GlobalMamba: loaded {len(report["kept"])} tensors from {checkpoint}', logger)
    for what in ('resized', 'dropped', 'unexpected', 'missing'):
        if report[what]:
            print_log(f'GlobalMamba: {what} keys: {", ".join(report[what])}', logger)
    return report


def convert_classifier_checkpoint(src, dst, model):
    """Released classifier -> backbone weights file (``{'state_dict': ...}``, keys without
    a prefix) for ``model``, the GlobalMamba backbone the weights are meant for. Returns the
    report of kept / dropped / resized / missing / unexpected keys."""
    state_dict, report = adapt_state_dict(read_state_dict(src), model)
    torch.save({'state_dict': state_dict,
                'meta': {'source': str(src), 'embed_dims': model.embed_dims,
                         'depth': model.depth, 'img_size': model.img_size}}, dst)
    return report
