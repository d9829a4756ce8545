"""Trial runs of the real configs: a few train iterations on generated data in the ADE20K /
COCO layouts, then one short evaluation (see ``mmglobalmamba.checks.trial_run``).

    python tools/trial_runs.py                                  # the three main configs, CUDA, fp16
    python tools/trial_runs.py --size 64 --iters 2 --precision fp32   # CPU check at 64 px
    python tools/trial_runs.py configs/upernet_globalmamba_ade20k.py --with-cp on

For each config and each ``with_cp`` setting it prints it/s, peak memory, the first and last
loss and the metric; the exit status is 1 when a loss is not finite or a run fails.
"""
import argparse
import os.path as osp
import sys
import traceback

MAIN_CONFIGS = ('configs/upernet_globalmamba_ade20k.py',
                'configs/mask-rcnn_globalmamba_fpn_1x_coco.py',
                'configs/upernet_vim-tiny_ade20k.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', default=list(MAIN_CONFIGS))
    parser.add_argument('--iters', type=int, default=20, help='train iterations per run')
    parser.add_argument('--size', type=int, default=None,
                        help='shrink crops / resizes to this many pixels (default: the '
                        "config's real resolution)")
    parser.add_argument('--precision', choices=['fp32', 'fp16', 'bf16'], default=None,
                        help='default: fp16 AMP on CUDA, fp32 on CPU')
    parser.add_argument('--with-cp', choices=['off', 'on', 'both'], default='both')
    parser.add_argument('--work-dir', default='work_dirs/trial_runs')
    parser.add_argument('--require-cuda-kernels', action='store_true',
                        help='fail unless the mamba-ssm / causal-conv1d kernels are used')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.config import Config

    from mmglobalmamba.benchmark.measure import describe_machine
    from mmglobalmamba.checks.trial_run import format_trials, make_trial_data, trial_run
    from mmglobalmamba.ops import available_backends
    cuda = torch.cuda.is_available()
    precision = args.precision or ('fp16' if cuda else 'fp32')
    backends = available_backends('mamba_inner')
    machine = describe_machine('cuda' if cuda else 'cpu')
    print(f'trial runs on {machine.describe()}; scan backends {backends}, precision '
          f'{precision}, {args.iters} iterations, size {args.size or "real"}', flush=True)
    if args.require_cuda_kernels and not (cuda and 'cuda' in backends):
        sys.exit('trial runs: the CUDA kernels are not available (mamba-ssm, causal-conv1d)')
    cps = {'off': [False], 'on': [True], 'both': [False, True]}[args.with_cp]
    results, failed = [], []
    for config in args.configs:
        task = 'seg' if Config.fromfile(config).get('default_scope') == 'mmseg' else 'det'
        data_root = make_trial_data(task, osp.join(args.work_dir, f'data_{task}_{args.size}'),
                                    args.size)
        for cp in cps:
            name = f'{osp.splitext(osp.basename(config))[0]}_cp{int(cp)}_{precision}'
            print(f'\n== {name} ==', flush=True)
            try:
                r = trial_run(config, data_root, osp.join(args.work_dir, name), args.iters,
                              args.size, cp, precision)
            except Exception:  # report and go on with the other runs
                traceback.print_exc()
                failed.append(name)
                continue
            results.append(r)
            if not r.finite:
                failed.append(f'{name} (non-finite loss)')
    print(f'\n{machine.finish().describe()}\n' + format_trials(results))
    if failed:
        print('FAILED: ' + ', '.join(failed))
        sys.exit(1)
    print('trial runs: OK')


if __name__ == '__main__':
    main()
