"""Train a GlobalMamba model from an mmsegmentation or mmdetection config.

One script for both: the config's ``default_scope`` (``mmseg`` or ``mmdet``) decides which
library's registries build it. On machines without CUDA it rewrites SyncBN to BN and, under
torchrun, runs multi-process on gloo (:func:`mmglobalmamba.engine.config.prepare_config`).

Examples::

    python tools/train.py configs/upernet_globalmamba_ade20k.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --amp --cfg-options train_cfg.max_iters=10
    python tools/train.py CONFIG --resume                  # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume path/to/iter_1000.pth
    python tools/train.py CONFIG --cpu-allocator tcmalloc   # CPU training, with_cp
    tools/dist_train.sh CONFIG 8
"""
import argparse
import os
import sys


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
        '--cpu-allocator', choices=['tcmalloc', 'jemalloc'], default=None,
        help='restart this command under another malloc (LD_PRELOAD) before anything is '
        'built: on CPU, glibc\'s heap holds far more than the live tensors of a with_cp '
        'step (README, "Training at scale")')
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


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_allocator:
        from mmglobalmamba.engine.cpu_allocator import reexec_under
        # returns once the allocator serves this process (else restarts the command)
        cli = sys.argv[1:] if argv is None else list(argv)
        reexec_under(args.cpu_allocator, [os.path.abspath(__file__)] + cli)
    import mmglobalmamba  # noqa: F401  (registers GlobalMamba, safe checkpoint loading)
    from mmengine.config import Config

    from mmglobalmamba.engine import enable_amp, release_process_group
    from mmglobalmamba.engine.config import choose_work_dir, prepare_config
    from mmglobalmamba.engine.runner import run_training, set_resume

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg = prepare_config(cfg, args.launcher)
    cfg.work_dir = choose_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        enable_amp(cfg, args.amp_dtype)
    elif args.amp_dtype is not None:
        raise SystemExit('--amp-dtype needs --amp')
    set_resume(cfg, args.resume)
    run_training(cfg)
    release_process_group()


if __name__ == '__main__':
    main()
