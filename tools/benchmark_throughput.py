"""Inference throughput (images/s) and peak memory of GlobalMamba backbones and full models,
per scan backend and batch size. Random weights and inputs; one table at the end
(library: ``mmglobalmamba.benchmark.throughput``).

    python tools/benchmark_throughput.py --arch tiny --shape 512 512 --batch-size 1 2
    python tools/benchmark_throughput.py --arch tiny --backend cpu torch --iters 3
    python tools/benchmark_throughput.py configs/upernet_globalmamba_ade20k.py --shape 512 512
    python tools/benchmark_throughput.py --arch small@800x1344 --device cuda --backend cuda

Full train steps: ``tools/benchmark_train_step.py``; resolution sweeps against ViT peers:
``tools/benchmark_resolution.py``.
"""
import argparse
import sys
import warnings

# OpenMMLab / setuptools deprecation chatter; our own warnings stay visible
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', category=UserWarning, module=r'(mmseg|mmdet|mmengine|mmcv)\.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='mmseg / mmdet config files (NAME@HxW '
                        'sets its own size)')
    parser.add_argument('--arch', nargs='+', default=[], help='backbone presets (tiny, small)')
    parser.add_argument('--shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='input size; repeat for several (default 512 512)')
    parser.add_argument('--batch-size', type=int, nargs='+', default=[1])
    parser.add_argument('--backend', nargs='+', default=None,
                        help='scan backends (cuda, cpu, torch); default: every available')
    parser.add_argument('--iters', type=int, default=5, help='timed calls per row')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls per row')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if any)')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--markdown', action='store_true', help='print a markdown table')
    args = parser.parse_args(argv)
    if not args.configs and not args.arch:
        parser.error('give at least one CONFIG or --arch')
    args.shape = [tuple(s) for s in (args.shape or [(512, 512)])]
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from mmglobalmamba.benchmark.measure import describe_machine, row_name, split_spec
    from mmglobalmamba.benchmark.throughput import (build_inference, format_throughput,
                                                    time_inference)
    from mmglobalmamba.ops import available_backends
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    usable = [b for b in available_backends('mamba_inner')
              if device.type == 'cuda' or b != 'cuda']
    backends = args.backend or usable
    for b in backends:
        if b not in usable:
            sys.exit(f'scan backend {b!r} cannot run on {device} here (available: {usable})')
    try:
        specs = [split_spec(s, args.shape) for s in args.arch + args.configs]
    except ValueError as err:
        sys.exit(str(err))
    runs = [(what, s, n) for what, shapes in specs for s in shapes for n in args.batch_size]
    machine = describe_machine(device)
    bar = tqdm(total=len(runs) * len(backends), unit='row', dynamic_ncols=True)
    results = []
    for what, shape, batch in runs:
        module, x = build_inference(what, shape, batch, device)
        for backend in backends:
            bar.set_description(f'{row_name(what)} {shape[0]}x{shape[1]} {backend} b{batch}')
            results.append(time_inference(module, x, row_name(what), backend, args.iters,
                                          args.warmup, device))
            bar.update(1)
        del module, x
    bar.close()
    print(f'\ninference, {machine.finish().describe()}; {args.warmup} warm-up + '
          f'{args.iters} timed calls per row, times: median and best call')
    if args.markdown:
        print(f'\nCommand: `python tools/benchmark_throughput.py {" ".join(argv)}`\n')
    print(format_throughput(results, args.markdown))


if __name__ == '__main__':
    main()
