"""Evaluate a trained GlobalMamba model from an mmsegmentation or mmdetection config.

Examples::

    python tools/test.py configs/upernet_globalmamba_ade20k.py work_dirs/.../iter_160000.pth
    python tools/test.py CONFIG CHECKPOINT --show-dir vis/   # also draw predictions (PNG/JPG)
    tools/dist_test.sh CONFIG CHECKPOINT 8

Checkpoints are read with ``torch.load(weights_only=True)`` (see ``mmglobalmamba.compat``).
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Test (evaluate) a GlobalMamba model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--show-dir', help='draw ground truth and predictions of every test image into this dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs such as test_dataloader.batch_size=2')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


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


def _jsonable(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def main(argv=None):
    args = parse_args(argv)
    import mmglobalmamba  # noqa: F401  (registers GlobalMamba, checkpoint allow-list)
    from mmengine.config import Config
    from train import prepare_config

    from mmglobalmamba.engine.process_group import release_process_group

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg = prepare_config(cfg, args.launcher)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)

    from mmengine.dist import is_main_process
    metrics = evaluate(cfg)  # the runner, and the DDP wrapper holding the process group, are gone
    main_process = is_main_process()  # asked before the group goes: every rank is 0 after
    release_process_group()
    if main_process:  # machine-readable copy of the logged metrics
        path = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(path, 'w') as f:
            json.dump({k: _jsonable(v) for k, v in metrics.items()}, f, indent=1)
        print(f'metrics written to {path}')
    return metrics


def evaluate(cfg):
    """Build the runner from ``cfg`` and return its test metrics."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
