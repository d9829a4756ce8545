"""Resolution sweep: backbone forward latency and peak memory of GlobalMamba-T, Vim-T and
ViT-Ti (mmseg's, and the same with F.scaled_dot_product_attention) at each input size,
batch 1, each (model, size) in a fresh process, with ratios vs GlobalMamba-T.

    python tools/benchmark_resolution.py --sweep 512 1024 1248 --threads 2 --markdown
    python tools/benchmark_resolution.py --sweep 800x1344 --models GlobalMamba-T ViT-Ti-SDPA

Every model is timed without a feature pyramid: its final stride-16 map, after its final
norm (mmglobalmamba/benchmark/resolution.py says why and how).
"""
import argparse
import shlex
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', category=UserWarning, module=r'(mmseg|mmdet|mmengine|mmcv)\.')


def parse_args(argv=None):
    from mmglobalmamba.benchmark.resolution import MODELS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sweep', nargs='+', default=['512', '1024', '1248'], metavar='SIZE',
                        help='input sizes: S (square) or HxW, multiples of 16 '
                        '(default 512 1024 1248)')
    parser.add_argument('--models', nargs='+', default=list(MODELS), metavar='MODEL',
                        help=f'from {", ".join(MODELS)} (default: all)')
    parser.add_argument('--rounds', type=int, default=3, help='timed forwards per row')
    parser.add_argument('--warmup', type=int, default=1, help='untimed forwards per row')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads in every child (default: torch\'s own)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds a row may take before it becomes an error row')
    parser.add_argument('--markdown', action='store_true',
                        help='print a markdown table and the command line')
    return parser.parse_args(argv)


def table(rows, markdown=False):
    """The rows as one table, with the errors of failed rows as notes under it."""
    from mmglobalmamba.benchmark.measure import format_ratio, format_table
    from mmglobalmamba.benchmark.resolution import REFERENCE
    header = ['model', 'input', 'tokens', 'median ms', 'best ms', 'peak MiB',
              f'time vs {REFERENCE}', f'memory vs {REFERENCE}']
    body, notes = [], []
    for row in rows:
        size = '{}x{}'.format(*row['size'])
        if row['error']:
            notes.append(f'[{len(notes) + 1}] {row["model"]} at {size}: {row["error"]}')
            body.append([row['model'], size, 'n/a', f'failed [{len(notes)}]', 'n/a', 'n/a',
                         'n/a', 'n/a'])
            continue
        peak = 'n/a' if row['peak_mib'] is None else \
            f'{"" if row["peak_exact"] else ">="}{row["peak_mib"]:.0f}'
        body.append([row['model'], size, row['tokens'], f'{row["median_s"] * 1e3:.1f}',
                     f'{row["best_s"] * 1e3:.1f}', peak, format_ratio(row['time_ratio']),
                     format_ratio(row['memory_ratio'])])
    text = format_table(header, body, markdown=markdown)
    return '\n'.join([text] + ([''] + notes if notes else []))


def main(argv=None):
    args = parse_args(argv)
    import torch

    from mmglobalmamba.benchmark.measure import describe_machine
    from mmglobalmamba.benchmark.resolution import MAMBA, check_models, parse_size, sweep
    try:  # bad input: a one-line message, before any process starts
        sizes = [parse_size(s) for s in args.sweep]
        check_models(args.models)
        if args.rounds < 1 or args.warmup < 0:
            raise ValueError(f'need --rounds >= 1 and --warmup >= 0, got {args.rounds} and '
                             f'{args.warmup}')
    except ValueError as exc:
        raise SystemExit(f'error: {exc}')
    if args.threads:
        torch.set_num_threads(args.threads)  # so the machine line shows the children's count
    machine = describe_machine(args.device)
    print(machine.describe(), flush=True)

    def progress(row):
        what = f'failed: {row["error"]}' if row['error'] else f'median {row["median_s"] * 1e3:.1f} ms'
        print(f'  {row["model"]} {row["size"][0]}x{row["size"][1]}: {what}', file=sys.stderr,
              flush=True)

    rows = sweep(sizes, args.models, rounds=args.rounds, warmup=args.warmup,
                 threads=args.threads, device=args.device, timeout=args.timeout,
                 progress=progress)
    machine.finish()
    scans = sorted({r['backend'] for r in rows if r['model'] in MAMBA and r['backend']})
    if scans:
        machine.extra['scan backend'] = ', '.join(scans)
    print(f'\n{machine.describe()}')
    print(f'\nBackbone forward, batch 1, eval, no grad; every model WITHOUT a feature pyramid '
          f'(its final stride-16 map after its final norm); {args.warmup} warm-up + '
          f'{args.rounds} timed forwards in a fresh process per row; peak memory above the '
          'built model and input; ratios are of medians (rows ran in separate processes); '
          'tokens exclude the cls token.\n')
    print(table(rows, markdown=args.markdown))
    if args.markdown:
        words = ['python', 'tools/benchmark_resolution.py'] + list(
            sys.argv[1:] if argv is None else argv)
        print('\n```\n' + ' '.join(shlex.quote(w) for w in words) + '\n```')
    return rows


if __name__ == '__main__':
    main()
