"""Throughput (images/s) and peak memory of GlobalMamba backbones and full models, per scan
backend and batch size (``--mode infer``), or the cost of a full train step (``--mode
train``). Random weights and inputs; prints a table at the end.

    python tools/benchmark_throughput.py --arch tiny --shape 512 512 --batch-size 1 2
    python tools/benchmark_throughput.py --arch tiny --backend cpu torch --iters 3
    python tools/benchmark_throughput.py configs/upernet_globalmamba_ade20k.py --shape 512 512
    python tools/benchmark_throughput.py --arch small --device cuda --backend cuda cpu ...

Train mode times whole steps (forward, loss, backward, optimizer step; the Runner's
``train_step``) with and without ``with_cp``, in fp32 and in the mixed precision the device
has (CUDA fp16, CPU bf16), and prints the ``with_cp`` savings of the tiny backbone and the
GlobalMamba / Vim step-time ratio. A model may carry its own input size as ``NAME@HxW``::

    python tools/benchmark_throughput.py --mode train --batch-size 2 --arch tiny@800x1344 \
        configs/upernet_globalmamba_ade20k.py@512x512 configs/upernet_vim-tiny_ade20k.py@512x512 \
        configs/mask-rcnn_globalmamba_fpn_1x_coco.py@800x1344

Peak memory: CUDA ``max_memory_allocated``; CPU the resident-set high-water mark reset
before each run (see ``mmglobalmamba/analysis/benchmark.py``), both above the memory held
before the run (model and inputs). Each (model, shape, backend, batch) runs ``--warmup``
untimed and ``--iters`` timed calls. Train mode runs every row in a fresh process, on CPU
under tcmalloc when it is installed (``--allocator``; glibc's heap keeps the pages of
blocks freed between kept tensors, which hides what ``with_cp`` saves).
"""
import argparse
import os
import sys
import warnings

# OpenMMLab / setuptools deprecation chatter; our own warnings stay visible
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', category=UserWarning, module=r'(mmseg|mmdet|mmengine|mmcv)\.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='mmseg / mmdet config files')
    parser.add_argument('--arch', nargs='+', default=[], help='backbone presets (tiny, small)')
    parser.add_argument('--shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='input size; repeat for several (default 512 512)')
    parser.add_argument('--batch-size', type=int, nargs='+', default=[1])
    parser.add_argument('--backend', nargs='+', default=None,
                        help='scan backends (cuda, cpu, torch); default: every available')
    parser.add_argument('--mode', choices=['infer', 'train'], default='infer',
                        help='infer: eval + no grad; train: full train steps (forward, loss, '
                        'backward, optimizer step)')
    parser.add_argument('--with-cp', choices=['off', 'on', 'both'], default='both',
                        help='train mode: activation checkpointing of the backbone blocks')
    parser.add_argument('--precision', nargs='+', choices=['fp32', 'fp16', 'bf16'],
                        default=None, help='train mode: default fp32 and the device\'s mixed '
                        'precision (CUDA fp16, CPU bf16)')
    parser.add_argument('--allocator', choices=['auto', 'glibc', 'tcmalloc', 'jemalloc'],
                        default='auto', help='train mode on CPU: the malloc each row\'s '
                        'process runs under (auto: tcmalloc if installed, else glibc)')
    parser.add_argument('--iters', type=int, default=5, help='timed calls per run')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls per run')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if any)')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--markdown', action='store_true', help='print a markdown table')
    args = parser.parse_args(argv)
    if not args.configs and not args.arch:
        parser.error('give at least one CONFIG or --arch')
    args.shape = [tuple(s) for s in (args.shape or [(512, 512)])]
    return args


def split_spec(spec, default_shapes):
    """'NAME@HxW' -> (NAME, [(H, W)]); a plain NAME takes ``default_shapes``."""
    if '@' not in spec:
        return spec, default_shapes
    name, size = spec.rsplit('@', 1)
    try:
        H, W = (int(v) for v in size.lower().split('x'))
    except ValueError:
        raise SystemExit(f'bad size in {spec!r}: write NAME@HxW, e.g. tiny@800x1344')
    return name, [(H, W)]


def train_main(args, argv):
    """--mode train: full train steps, with / without with_cp, fp32 / mixed precision."""
    import torch
    from tqdm import tqdm

    from mmglobalmamba.analysis.benchmark import describe_machine
    from mmglobalmamba.analysis.train_step import (format_train_table, row_name,
                                                   time_train_step_in_child, train_targets)
    from mmglobalmamba.engine.cpu_allocator import resolve_allocator
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    precisions = args.precision or ['fp32', 'fp16' if device.type == 'cuda' else 'bf16']
    if device.type == 'cpu' and 'fp16' in precisions:
        sys.exit('fp16 mixed precision needs CUDA; use bf16 on CPU')
    cps = {'off': [False], 'on': [True], 'both': [False, True]}[args.with_cp]
    backend = (args.backend or [None])[0]
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
    runs = []
    for spec in args.arch + args.configs:
        what, shapes = split_spec(spec, args.shape)
        name = row_name(what)
        runs += [(what, name, s, b, cp, p) for s in shapes for b in args.batch_size
                 for p in precisions for cp in cps]
    bar = tqdm(total=len(runs) * (args.iters + args.warmup), unit='step', dynamic_ncols=True)
    results = []
    for what, name, shape, batch, cp, prec in runs:
        bar.set_description(f'{name} {shape[0]}x{shape[1]} b{batch} cp={int(cp)} {prec}')
        results.append(time_train_step_in_child(
            what, shape, batch, cp, prec, device, iters=args.iters, warmup=args.warmup,
            name=name, backend=backend, allocator=allocator))
        bar.update(args.iters + args.warmup)
    bar.close()
    where = f'; CPU allocator {allocator}' if allocator else ''
    print(f'\ntrain steps, {describe_machine(device)}; {args.warmup} warm-up + '
          f'{args.iters} timed steps per row, each row in a fresh process{where}')
    if args.markdown:
        print(f'\nCommand: `python tools/benchmark_throughput.py {" ".join(argv)}`\n')
    print(format_train_table(results, markdown=args.markdown))
    for line in train_targets(results, device.type):
        print(line)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.mode == 'train':
        return train_main(args, argv)
    import torch
    from tqdm import tqdm

    from mmglobalmamba.analysis import build_backbone, build_model_from_config, model_inputs
    from mmglobalmamba.analysis.benchmark import benchmark, describe_machine
    from mmglobalmamba.ops import available_backends

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    usable = [b for b in available_backends('mamba_inner') if b != 'cuda'] \
        if device.type == 'cpu' else available_backends('mamba_inner')
    backends = args.backend or usable
    for b in backends:
        if b not in usable:
            sys.exit(f'scan backend {b!r} cannot run on {device} here (available: {usable})')

    models = [('arch', a) for a in args.arch] + [('cfg', c) for c in args.configs]
    runs = [((kind, what), s, b, n) for kind, spec in models
            for what, shapes in [split_spec(spec, args.shape)] for s in shapes
            for b in backends for n in args.batch_size]
    bar = tqdm(total=len(runs) * (args.iters + args.warmup), unit='call', dynamic_ncols=True)
    results, built = [], {}
    for (kind, what), shape, backend, batch in runs:
        if (kind, what) not in built:
            if kind == 'arch':
                built[(kind, what)] = (build_backbone(what).to(device), None,
                                       f'GlobalMamba-{what}')
            else:
                model, task = build_model_from_config(what)
                built[(kind, what)] = (model.to(device), task,
                                       os.path.splitext(os.path.basename(what))[0])
        model, task, name = built[(kind, what)]
        if task is None:
            module = model

            def make_inputs(batch=batch, shape=shape):
                return (torch.randn(batch, 3, *shape, device=device), )
        else:
            module, (x, ) = model_inputs(model, task, shape, batch)

            def make_inputs(x=x):
                return (x.to(device), )
        bar.set_description(f'{name} {shape[0]}x{shape[1]} {backend} b{batch}')
        results.append(benchmark(module, make_inputs, name, shape, backend, batch,
                                 mode='infer', iters=args.iters, warmup=args.warmup,
                                 device=device, progress=bar))
    bar.close()

    print(f'\n{args.mode}, {describe_machine(device)}; '
          f'{args.warmup} warm-up + {args.iters} timed calls per row')
    header = ['model', 'input', 'backend', 'batch', 'images/s', 'ms/batch', 'best ms',
              'peak MiB']
    rows = [[r.name, f'{r.shape[0]}x{r.shape[1]}', r.backend, str(r.batch_size),
             f'{r.images_per_s:.2f}', f'{r.ms_per_batch:.0f}', f'{r.best_ms:.0f}',
             f'{r.peak_mib:.0f}' + ('' if r.peak_exact else ' (>=)')] for r in results]
    if args.markdown:
        print(f'\nCommand: `python tools/benchmark_throughput.py {" ".join(argv)}`\n')
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for row in rows:
            print('| ' + ' | '.join(row) + ' |')
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print('  '.join(h.ljust(w) for h, w in zip(header, widths)))
        for row in rows:
            print('  '.join(c.ljust(w) for c, w in zip(row, widths)))


if __name__ == '__main__':
    main()
