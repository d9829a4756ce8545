"""Configs made ready for this machine, and models built from them.

``tools/train.py``, ``tools/test.py``, ``tools/check_config.py`` and the analysis tools all go
through these few functions, so a config behaves the same in each of them:

* :func:`prepare_config`: the scope check and the CPU fallbacks (SyncBN -> BN, gloo),
* :func:`choose_work_dir`: ``--work-dir`` > the config's ``work_dir`` > ``work_dirs/<name>``,
* :func:`build_model_on_cpu`: the config's model in its scope, SyncBN as BN, optionally
  without reading pretrained weights; :func:`build_model_from_config` the same from a path,
  in eval mode, with its task; :func:`build_backbone` a backbone preset as the configs use it.
"""
import copy
import importlib
import os.path as osp

import torch

SCOPES = ('mmseg', 'mmdet')
SYNCBN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN')


def config_scope(cfg):
    """The config's ``default_scope`` ('mmseg' or 'mmdet'); anything else is an error."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'config default_scope is {scope!r}; expected an mmsegmentation '
                         "('mmseg') or mmdetection ('mmdet') config")
    return scope


def syncbn_to_bn(cfg):
    """A copy of a config tree (dicts and lists) with every SyncBN norm type made ``BN``.

    mmengine already reverts SyncBN modules in single-process runs, but a multi-process CPU
    (gloo) run would keep them and fail; configs stay written for multi-GPU training.
    Use as ``cfg.model = syncbn_to_bn(cfg.model)``.
    """
    if isinstance(cfg, dict):
        return {k: 'BN' if k == 'type' and v in SYNCBN_TYPES else syncbn_to_bn(v)
                for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(syncbn_to_bn(v) for v in cfg)
    return copy.deepcopy(cfg)


def drop_pretrained(model_cfg):
    """Remove every ``Pretrained`` init (and ``pretrained=``) from a model config, in place,
    so that building it reads nothing from disk."""
    if isinstance(model_cfg, dict):
        model_cfg.pop('pretrained', None)
        for key in list(model_cfg.keys()):
            value = model_cfg[key]
            if key == 'init_cfg' and isinstance(value, dict) and \
                    value.get('type') == 'Pretrained':
                model_cfg[key] = None
            else:
                drop_pretrained(value)
    elif isinstance(model_cfg, (list, tuple)):
        for item in model_cfg:
            drop_pretrained(item)
    return model_cfg


def setup_cpu_distributed(cfg, launcher):
    """Prepare a multi-process run on a machine without CUDA (gloo backend).

    mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` unconditionally,
    so the gloo process group is initialized here, before the Runner is built (the Runner
    then skips its own initialization), and the model is wrapped in DDP without device ids.
    """
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available():
        return cfg
    if launcher != 'pytorch':
        raise RuntimeError(f'--launcher {launcher} without CUDA is not supported; use '
                           'torchrun (tools/dist_train.sh) for multi-process CPU runs')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.env_cfg = cfg.get('env_cfg', {})
    cfg.env_cfg['dist_cfg'] = dict(backend='gloo')
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    return cfg


def prepare_config(cfg, launcher='none'):
    """Make a loaded mmengine ``Config`` runnable here: checks the scope, records the
    launcher and, without CUDA, turns SyncBN into BN and sets up gloo for torchrun."""
    config_scope(cfg)
    cfg.launcher = launcher
    if not torch.cuda.is_available():
        for key in ('model', 'tta_model'):
            if cfg.get(key) is not None:
                cfg[key] = syncbn_to_bn(cfg[key].to_dict())
        cfg = setup_cpu_distributed(cfg, launcher)
    return cfg


def choose_work_dir(cfg, config_path, work_dir=None):
    """``work_dir`` (a command-line choice) > the config's ``work_dir`` >
    ``./work_dirs/<config file name without .py>``."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def build_model_on_cpu(cfg, pretrained=True):
    """The config's model built in its scope's registry on CPU, SyncBN as BN.

    ``pretrained=False`` drops every ``Pretrained`` init so nothing is read from disk (for
    shape checks and benchmarks, where the weights do not matter). Returns the model in
    train mode, as the registry builds it.
    """
    import mmglobalmamba.models  # noqa: F401  (registers GlobalMamba in every scope)
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    scope = config_scope(cfg)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model_cfg = syncbn_to_bn(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict')
                             else dict(cfg.model))
    if not pretrained:
        drop_pretrained(model_cfg)
    return registry.build(ConfigDict(model_cfg))  # a ConfigDict: mmdet reads train_cfg.rpn


def build_model_from_config(config, cfg_options=None):
    """``config`` (a path or a ``Config``)'s model on CPU with random weights (pretrained
    init dropped, SyncBN as BN), in eval mode. Returns (model, task), task 'seg' (mmseg)
    or 'det' (mmdet)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model_on_cpu(cfg, pretrained=False)
    return model.eval(), 'seg' if config_scope(cfg) == 'mmseg' else 'det'


def build_backbone(arch='tiny', **kwargs):
    """A GlobalMamba backbone as the configs use it (4 outputs, strides 4-32, BN), random
    weights; ``arch`` a preset name or ``dict(embed_dims=..., depth=...)``, whose outputs
    are then spread over the depth; ``kwargs`` override the constructor arguments."""
    from mmglobalmamba.models import GlobalMamba
    cfg = dict(arch=arch, img_size=224, out_indices=(5, 11, 17, 23),
               pyramid_strides=(4, 8, 16, 32), norm_cfg=dict(type='BN', requires_grad=True))
    if isinstance(arch, dict):
        depth = arch['depth']
        cfg['out_indices'] = tuple(depth * (i + 1) // 4 - 1 for i in range(4))
    cfg.update(kwargs)
    return GlobalMamba(**cfg)
