"""Evaluate a trained GlobalMamba model from an mmsegmentation or mmdetection config.

Examples::

    python tools/test.py configs/upernet_globalmamba_ade20k.py work_dirs/.../iter_160000.pth
    python tools/test.py CONFIG CHECKPOINT --show-dir vis/   # also draw predictions (PNG/JPG)
    tools/dist_test.sh CONFIG CHECKPOINT 8

Checkpoints are read with ``torch.load(weights_only=True)`` (README: "Checkpoint safety").
"""
import argparse
import os


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


def main(argv=None):
    args = parse_args(argv)
    import mmglobalmamba  # noqa: F401  (registers GlobalMamba, safe checkpoint loading)
    from mmengine.config import Config
    from mmengine.dist import is_main_process

    from mmglobalmamba.engine import release_process_group
    from mmglobalmamba.engine.config import choose_work_dir, prepare_config
    from mmglobalmamba.engine.runner import enable_visualization, run_test, write_metrics

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg = prepare_config(cfg, args.launcher)
    cfg.work_dir = choose_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)

    metrics = run_test(cfg)  # the runner, and the DDP wrapper holding the process group, are gone
    main_process = is_main_process()  # asked before the group goes: every rank is 0 after
    release_process_group()
    if main_process:
        print(f'metrics written to {write_metrics(metrics, cfg.work_dir)}')
    return metrics


if __name__ == '__main__':
    main()
