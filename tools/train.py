"""Train a GlobalMamba model from an mmsegmentation or mmdetection config.

One script for both: the config's ``default_scope`` (``mmseg`` or ``mmdet``) decides which
library's registries build it. On machines without CUDA it rewrites SyncBN to BN and, under
torchrun, runs multi-process on gloo (see :func:`setup_cpu_distributed`).

Examples::

    python tools/train.py configs/upernet_globalmamba_ade20k.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --amp --cfg-options train_cfg.max_iters=10
    python tools/train.py CONFIG --resume                  # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume path/to/iter_1000.pth
    tools/dist_train.sh CONFIG 8
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Train a GlobalMamba segmentor or detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume training: from the latest checkpoint in the work dir if no path is '
        'given, else from the given checkpoint')
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed precision: AmpOptimWrapper on CUDA (fp16 by default), bf16 autocast on '
        'CPU (segmentors; mmcv\'s CPU NMS/RoIAlign are fp32-only)')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None,
                        help='autocast dtype for --amp (CUDA default float16, CPU bfloat16)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs such as train_cfg.max_iters=100')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torchrun sets LOCAL_RANK instead)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_cpu_distributed(cfg, launcher):
    """Prepare a multi-process run on a machine without CUDA (gloo backend).

    mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` unconditionally,
    so we initialize the gloo process group ourselves before the Runner is built (the Runner
    then skips its own initialization) and wrap the model in DDP without device ids.
    """
    import torch
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
    """Scope checks, CPU fallbacks (SyncBN -> BN, gloo) shared by train.py and test.py."""
    import torch
    from mmglobalmamba.compat import syncbn_to_bn
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise ValueError(f'config default_scope is {scope!r}; expected an mmsegmentation '
                         "('mmseg') or mmdetection ('mmdet') config")
    cfg.launcher = launcher
    if not torch.cuda.is_available():
        for key in ('model', 'tta_model'):
            if cfg.get(key) is not None:
                cfg[key] = syncbn_to_bn(cfg[key].to_dict())
        cfg = setup_cpu_distributed(cfg, launcher)
    return cfg


def work_dir_of(cfg, args):
    """``--work-dir`` > ``work_dir`` in the config > ``./work_dirs/<config name>``."""
    if args.work_dir is not None:
        return args.work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])


def main(argv=None):
    args = parse_args(argv)
    import mmglobalmamba  # noqa: F401  (registers GlobalMamba, checkpoint allow-list)
    from mmengine.config import Config

    from mmglobalmamba.engine import enable_amp, release_process_group

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg = prepare_config(cfg, args.launcher)
    cfg.work_dir = work_dir_of(cfg, args)
    if args.amp:
        enable_amp(cfg, args.amp_dtype)
    elif args.amp_dtype is not None:
        raise SystemExit('--amp-dtype needs --amp')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    train(cfg)
    release_process_group()


def train(cfg):
    """Build the runner and train; the runner (and the DDP wrapper holding the process group)
    is gone when this returns, so :func:`release_process_group` can free the group."""
    from mmengine.dist import get_rank, get_world_size
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    print(f'rank {get_rank()}/{get_world_size()} finished training', flush=True)


if __name__ == '__main__':
    main()
