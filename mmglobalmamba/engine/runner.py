"""Train and test runs from a prepared config (the library side of tools/train.py and
tools/test.py).

Each run builds its mmengine Runner inside the function, so the runner (and the DDP wrapper
that holds the process group) is gone when it returns and
:func:`~mmglobalmamba.engine.release_process_group` can free the group.
"""
import json
import os.path as osp


def _build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def set_resume(cfg, resume):
    """``resume``: None (start fresh), ``'auto'`` (the latest checkpoint in the work dir)
    or a checkpoint path."""
    if resume is None:
        return cfg
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume
    return cfg


def run_training(cfg):
    """Build the runner from ``cfg`` and train."""
    from mmengine.dist import get_rank, get_world_size
    _build_runner(cfg).train()
    print(f'rank {get_rank()}/{get_world_size()} finished training', flush=True)


def run_test(cfg):
    """Build the runner from ``cfg`` and return its test metrics."""
    return _build_runner(cfg).test()


def enable_visualization(cfg, show_dir):
    """Turn on the scope's visualization hook and send its drawings to ``show_dir``."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise RuntimeError('--show-dir needs default_hooks.visualization in the config')
    hook['draw'] = True
    hook['interval'] = 1
    show_dir = osp.abspath(show_dir)
    if cfg.default_scope == 'mmdet':
        hook['test_out_dir'] = show_dir  # an absolute path is used as is
    else:  # mmseg: the visualizer writes <show_dir>/vis_data/vis_image/*.png
        cfg.visualizer['save_dir'] = show_dir
    return cfg


def _jsonable(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_metrics(metrics, work_dir, name='test_metrics.json'):
    """A machine-readable copy of the logged metrics; returns its path."""
    path = osp.join(work_dir, name)
    with open(path, 'w') as f:
        json.dump({k: _jsonable(v) for k, v in metrics.items()}, f, indent=1)
    return path
