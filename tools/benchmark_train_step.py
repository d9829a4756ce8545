"""What a full train step costs: time and peak memory of forward, loss, backward and
optimizer step (the Runner's ``train_step``), with and without ``with_cp``, in fp32 and the
device's mixed precision (CUDA fp16, CPU bf16). Each row runs in a fresh process, on CPU
under tcmalloc when it is installed (``--allocator``; glibc's heap keeps the pages of blocks
freed between kept tensors, which hides what ``with_cp`` saves). Library:
``mmglobalmamba.benchmark.train_step``. A model may carry its own size as ``NAME@HxW``::

    python tools/benchmark_train_step.py --batch-size 2 tiny@800x1344 \\
        configs/upernet_globalmamba_ade20k.py@512x512 configs/upernet_vim-tiny_ade20k.py@512x512 \\
        configs/mask-rcnn_globalmamba_fpn_1x_coco.py@800x1344

After the table it prints what ``with_cp`` saves for each pair of rows (memory without /
with, step time with / without, best steps) and GlobalMamba-T's UperNet step time against
Vim-T's where both were measured.
"""
import argparse
import os
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

GM_UPERNET, VIM_UPERNET = 'upernet_globalmamba_ade20k', 'upernet_vim-tiny_ade20k'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='+', help='backbone presets (tiny, small) or mmseg / '
                        'mmdet config files, each optionally NAME@HxW')
    parser.add_argument('--shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='input size of models without @HxW (default 512 512)')
    parser.add_argument('--batch-size', type=int, nargs='+', default=[2])
    parser.add_argument('--backend', default=None, help='scan backend (default: automatic)')
    parser.add_argument('--with-cp', choices=['off', 'on', 'both'], default='both',
                        help='activation checkpointing of the backbone blocks')
    parser.add_argument('--precision', nargs='+', choices=['fp32', 'fp16', 'bf16'],
                        default=None, help="default: fp32 and the device's mixed precision")
    parser.add_argument('--allocator', choices=['auto', 'glibc', 'tcmalloc', 'jemalloc'],
                        default='auto', help="CPU: the malloc each row's process runs under "
                        '(auto: tcmalloc if installed, else glibc)')
    parser.add_argument('--iters', type=int, default=3, help='timed steps per row')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per row')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if any)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads per row')
    parser.add_argument('--markdown', action='store_true', help='print a markdown table')
    args = parser.parse_args(argv)
    args.shape = [tuple(s) for s in (args.shape or [(512, 512)])]
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from mmglobalmamba.benchmark.measure import describe_machine, row_name, split_spec
    from mmglobalmamba.benchmark.train_step import (format_train_table, step_time_ratios,
                                                    time_train_step_in_child,
                                                    with_cp_savings)
    from mmglobalmamba.engine.cpu_allocator import resolve_allocator
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    precisions = args.precision or ['fp32', 'fp16' if device.type == 'cuda' else 'bf16']
    if device.type == 'cpu' and 'fp16' in precisions:
        sys.exit('fp16 mixed precision needs CUDA; use bf16 on CPU')
    allocator = None  # CUDA peaks are the CUDA allocator's: keep the environment's
    if device.type == 'cpu':
        try:
            allocator = resolve_allocator(args.allocator)
        except FileNotFoundError as err:
            sys.exit(str(err))
        if args.allocator == 'auto' and allocator == 'glibc':
            print('note: tcmalloc is not installed (apt-get install libtcmalloc-minimal4); rows '
                  'run under glibc malloc, whose resident set overstates what with_cp keeps',
                  file=sys.stderr)
    if args.threads:  # the children read it from the environment
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
        torch.set_num_threads(args.threads)
    try:
        specs = [split_spec(s, args.shape) for s in args.models]
    except ValueError as err:
        sys.exit(str(err))
    cps = {'off': [False], 'on': [True], 'both': [False, True]}[args.with_cp]
    runs = [(what, s, b, cp, p) for what, shapes in specs for s in shapes
            for b in args.batch_size for p in precisions for cp in cps]
    machine = describe_machine(device)
    bar = tqdm(total=len(runs), unit='row', dynamic_ncols=True)
    results = []
    for what, shape, batch, cp, prec in runs:
        bar.set_description(f'{row_name(what)} {shape[0]}x{shape[1]} b{batch} cp={int(cp)} '
                            f'{prec}')
        results.append(time_train_step_in_child(
            what, shape, batch, cp, prec, device, iters=args.iters, warmup=args.warmup,
            backend=args.backend, allocator=allocator))
        bar.update(1)
    bar.close()
    where = f'; CPU allocator {allocator}' if allocator else ''
    print(f'\ntrain steps, {machine.finish().describe()}; {args.warmup} warm-up + '
          f'{args.iters} timed steps per row, each row in a fresh process{where}')
    if args.markdown:
        print(f'\nCommand: `python tools/benchmark_train_step.py {" ".join(argv)}`\n')
    print(format_train_table(results, args.markdown))
    savings = with_cp_savings(results)
    if savings:
        print('\nwith_cp: peak memory without / with, step time with / without (best steps)')
    for off, on, mem, t in savings:
        print(f'  {off.name} {off.shape[0]}x{off.shape[1]} b{off.batch_size} {off.precision}: '
              f'memory {mem:.2f}x less ({off.peak_mib:.0f} -> {on.peak_mib:.0f} MiB), '
              f'time {t:.2f}x')
    ratios = step_time_ratios(results, GM_UPERNET, VIM_UPERNET)
    if ratios:
        print('\nGlobalMamba-T / Vim-T UperNet step time (best steps)')
    for gm, _, ratio in ratios:
        print(f'  {gm.shape[0]}x{gm.shape[1]} b{gm.batch_size} with_cp '
              f'{"on" if gm.with_cp else "off"} {gm.precision}: {ratio:.2f}x')


if __name__ == '__main__':
    main()
