"""Layer-wise learning-rate decay for GlobalMamba backbones.

Fine-tuning a pretrained plain (non-hierarchical) backbone works best when the layers close
to the input move less than the ones close to the task head (BEiT, MAE, Vim all do this).
Parameters are assigned a layer id:

* ``patch_embed.*``, ``pos_embed``, ``cls_token``                 -> 0
* ``layers.{i}.*``                                                -> i + 1
* everything else (``norm_f``, ``out_norms``, ``pyramid``, neck,
  decode/auxiliary/RPN/RoI heads)                                 -> num_layers + 1

and get ``lr = base_lr * layer_decay_rate ** (num_layers + 1 - layer_id)``, where
``num_layers`` is the backbone's ``depth``. Weight decay is switched off for biases, every
1-D weight (normalization layers) and the parameters the model marks with
``_no_weight_decay = True``: the position embeddings and cls token (backbone) and the SSM
state parameters ``A_log``, ``D`` and their backward twins (mixer).

The constructor works on a bare backbone as well as on a full mmseg / mmdet model, where the
backbone's parameters are called ``backbone.*``.
"""
import re
from typing import List, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from mmglobalmamba.registry import OPTIM_WRAPPER_CONSTRUCTORS

_EMBED_NAMES = ('patch_embed', 'pos_embed', 'cls_token')
_LAYER_RE = re.compile(r'^layers\.(\d+)\.')


def get_layer_id(name: str, num_layers: int, has_backbone: bool = True) -> int:
    """Layer id of a parameter called ``name`` (as named in the full model).

    ``has_backbone`` says whether the model wraps the backbone as ``backbone``; when it
    does not, ``name`` is taken to be a backbone parameter name.
    """
    if has_backbone:
        if not name.startswith('backbone.'):
            return num_layers + 1
        name = name[len('backbone.'):]
    if name.split('.', 1)[0] in _EMBED_NAMES:
        return 0
    match = _LAYER_RE.match(name)
    if match:
        layer = int(match.group(1))
        if layer >= num_layers:
            raise ValueError(
                f'parameter {name!r} belongs to layer {layer}, but paramwise_cfg.num_layers '
                f'is {num_layers}: set num_layers to the backbone depth')
        return layer + 1
    return num_layers + 1


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Whether ``param`` (called ``name``) is trained without weight decay."""
    return param.ndim <= 1 or name.rsplit('.', 1)[-1] == 'bias' or \
        getattr(param, '_no_weight_decay', False)


def backbone_depth(module: nn.Module) -> int:
    """``depth`` of the GlobalMamba backbone in ``module`` (a full model or the backbone)."""
    backbone = getattr(module, 'backbone', module)
    depth = getattr(backbone, 'depth', None)
    if not isinstance(depth, int):
        raise TypeError(
            f'layer-wise lr decay needs a backbone with a `depth` (GlobalMamba); '
            f'{type(backbone).__name__} has none')
    return depth


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class GlobalMambaLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with layer-wise lr decay for GlobalMamba.

    ``paramwise_cfg`` keys:

    * ``layer_decay_rate`` (float): lr ratio between consecutive layers, e.g. 0.92.
    * ``num_layers`` (int, optional): read from the backbone's ``depth``; when given it
      must equal it (older configs wrote ``num_layers=24``).

    Example::

        optim_wrapper = dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            constructor='GlobalMambaLayerDecayOptimizerConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.92))
    """

    def _validate_cfg(self) -> None:
        super()._validate_cfg()
        if 'layer_decay_rate' not in self.paramwise_cfg:
            raise KeyError(f'{type(self).__name__} needs paramwise_cfg.layer_decay_rate')
        unknown = set(self.paramwise_cfg) - {'num_layers', 'layer_decay_rate'}
        if unknown:
            raise KeyError(f'{type(self).__name__} does not support paramwise_cfg keys '
                           f'{sorted(unknown)}')
        if self.base_lr is None:
            raise ValueError('the optimizer config needs an lr for layer-wise decay')

    def lr_scale(self, layer_id: int, num_layers: int) -> float:
        """lr multiplier of a layer id."""
        return self.paramwise_cfg['layer_decay_rate'] ** (num_layers + 1 - layer_id)

    def num_layers(self, module: nn.Module) -> int:
        """The backbone depth; a ``paramwise_cfg.num_layers`` that differs is an error."""
        depth = backbone_depth(module)
        given = self.paramwise_cfg.get('num_layers')
        if given is not None and given != depth:
            raise ValueError(
                f'paramwise_cfg.num_layers is {given}, but the backbone has depth {depth}: '
                'drop num_layers (it is read from the model) or set it to the depth')
        return depth

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        """Fill ``params`` with one group per (layer id, decay / no decay)."""
        num_layers = self.num_layers(module)
        base_wd = self.base_wd or 0.
        has_backbone = isinstance(getattr(module, 'backbone', None), nn.Module)
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = get_layer_id(name, num_layers, has_backbone)
            no_decay = is_no_decay(name, param)
            key: Tuple[int, bool] = (layer_id, no_decay)
            if key not in groups:
                scale = self.lr_scale(layer_id, num_layers)
                groups[key] = dict(
                    params=[], param_names=[],
                    group_name=f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}',
                    layer_id=layer_id, lr_scale=scale,
                    lr=self.base_lr * scale,
                    weight_decay=0. if no_decay else base_wd)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        for key in sorted(groups):
            params.append(groups[key])
        if not params:
            return
        lrs = [g['lr'] for g in params]
        print_log(f'layer-wise lr decay {self.paramwise_cfg["layer_decay_rate"]} over '
                  f'{num_layers} layers: {len(params)} param groups, lr {min(lrs):.3g} '
                  f'(embeddings) .. {max(lrs):.3g} (heads)', logger='current')
