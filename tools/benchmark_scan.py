#!/usr/bin/env python
"""Time the selective-scan kernels (and, with ``--backbone``, the tiny backbone).

Section 1 (always): the fast kernel of the device ('cpu' = our compiled kernel on CPU,
'cuda' = mamba_ssm on GPU) against mambapy's parallel scan (when importable; `pip install
mambapy --no-deps`) in interleaved rounds, and the PyTorch reference loop (once per entry),
forward and forward+backward, at B=2, d_inner=384, d_state=16 and L=1361 (512x512 input) /
4481 (800x1344). ``--ref-steps N`` times the reference at L=N only and extrapolates
linearly in L (entries marked ``*``); ``--skip-ref`` leaves it out.

Section 2 (``--backbone``): GlobalMamba-tiny at 512x512, batch 2: the forward next to its
GEMM floor (the four projections of each of the 24 mixers and the patch-embedding convs,
as plain F.linear / F.conv2d at the same shapes), and the train step (forward + backward)
next to the forward + backward of the same GEMMs, in interleaved rounds; ratios are the
median over the rounds. Library: ``mmglobalmamba.benchmark.scan``.

    python tools/benchmark_scan.py                 # scan table on CPU
    python tools/benchmark_scan.py --backbone      # + backbone table
    python tools/benchmark_scan.py --device cuda --backbone
"""
import argparse
import sys

import torch

from mmglobalmamba.benchmark import scan
from mmglobalmamba.benchmark.measure import describe_machine


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    p.add_argument('--lengths', type=int, nargs='+', default=[1361, 4481])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--d-inner', type=int, default=384)
    p.add_argument('--d-state', type=int, default=16)
    p.add_argument('--repeats', type=int, default=3, help='timed rounds per entry')
    p.add_argument('--ref-steps', type=int, default=0,
                   help='measure the torch reference at this L only, extrapolate the rest')
    p.add_argument('--skip-ref', action='store_true', help='do not run the torch reference')
    p.add_argument('--no-mambapy', action='store_true')
    p.add_argument('--no-scan', action='store_true', help='skip section 1')
    p.add_argument('--backbone', action='store_true', help='also time the tiny backbone')
    p.add_argument('--no-train', action='store_true', help='backbone: forward only')
    p.add_argument('--bb-size', type=int, default=512)
    p.add_argument('--bb-batch', type=int, default=2)
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: keep)')
    p.add_argument('--markdown', action='store_true', help='print markdown tables')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('CUDA is not available')
    machine = describe_machine(device)
    if not args.no_scan:
        fast, rows = scan.measure_scans(device, args.lengths, args.batch, args.d_inner,
                                        args.d_state, args.repeats, args.ref_steps,
                                        args.skip_ref, not args.no_mambapy)
        print(f'== selective scan: B={args.batch} d_inner={args.d_inner} '
              f'd_state={args.d_state}, softplus + delta_bias + D + z gating, fp32 ==')
        if fast is None:
            print(f'note: no compiled kernel for {device.type} here: timing the others only')
        print(scan.format_scan_table(fast, rows, args.markdown))
        if any(r['ref_estimated'] for r in rows):
            print(f'* extrapolated linearly in L from a run at L={args.ref_steps}')
        if scan.mambapy_fn() is None and not args.no_mambapy:
            print('mambapy not importable: `pip install mambapy --no-deps` to include it')
    if args.backbone:
        result = scan.measure_backbone(device, args.bb_batch, args.bb_size, args.repeats,
                                       with_torch=not args.skip_ref, train=not args.no_train)
        print(f'\n== GlobalMamba-tiny, batch {result["batch"]}, {result["size"]}x'
              f'{result["size"]}: L = {result["L"]}, {result["mixers"]} mixers; GEMM floor = '
              'per mixer in_proj + x_proj + dt_proj + out_proj, one patch-embed conv per '
              f'band; {args.repeats} interleaved rounds ==')
        print(scan.format_backbone_table(result, args.markdown))
    print(f'\n{machine.finish().describe()}')


if __name__ == '__main__':
    main()
