#!/usr/bin/env python
"""CUDA side of ``tools/gpu_check.sh``: report the kernels found, check the CUDA backend
against the PyTorch reference at backbone sizes (outputs and gradients), and time the
selective scan and the tiny backbone (``mmglobalmamba.benchmark.scan``).

    python tools/gpu_check.py [--repeats 10] [--skip-scan] [--skip-backbone]

Exit status: 0 when the CUDA backend is available and agrees with the reference to 1e-3
(relative to the reference's largest magnitude).
"""
import argparse
import sys

import torch

from mmglobalmamba import ops
from mmglobalmamba.benchmark import scan
from mmglobalmamba.benchmark.measure import describe_machine
from mmglobalmamba.ops import dispatch

TOLERANCE = 1e-3


def report_environment():
    print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, '
          f'device {torch.cuda.get_device_name(0)} '
          f'(capability {".".join(map(str, torch.cuda.get_device_capability(0)))})')
    for line in dispatch.backend_report():
        print(f'  {line}')
    for op in ('selective_scan', 'causal_conv1d', 'mamba_inner'):
        print(f'  backends for {op}: {ops.available_backends(op)}')
    return 'cuda' in ops.available_backends('mamba_inner')


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / (b.float().abs().max() + 1e-12)).item()


def check_agreement(device):
    """CUDA vs torch backend on mixer-sized inputs (L=1361): outputs and gradients."""
    inputs = scan.make_scan_inputs(2, 384, 16, 1361, device)
    results = {}
    for name in ('cuda', 'torch'):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        out = scan.scan_backend_fn(name)(**leaves)
        out.backward(torch.ones_like(out))
        results[name] = (out.detach(), {k: v.grad for k, v in leaves.items()})
    errs = {'out': rel_err(results['cuda'][0], results['torch'][0])}
    for k in inputs:
        errs['d' + k] = rel_err(results['cuda'][1][k], results['torch'][1][k])
    worst = max(errs.values())
    print('selective_scan cuda vs torch (L=1361), max rel err: ' +
          ', '.join(f'{k} {v:.1e}' for k, v in errs.items()) +
          f'; worst {worst:.1e} (tolerance {TOLERANCE:g})')
    return worst < TOLERANCE


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--skip-scan', action='store_true')
    p.add_argument('--skip-backbone', action='store_true')
    cli = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit('gpu_check: torch sees no CUDA device')
    device = torch.device('cuda')
    machine = describe_machine(device)
    if not report_environment():
        sys.exit('gpu_check: the CUDA backend is not available (see above)')
    ok = check_agreement(device)
    if not cli.skip_scan:
        fast, rows = scan.measure_scans(device, rounds=cli.repeats)
        print('\n' + scan.format_scan_table(fast, rows))
    if not cli.skip_backbone:
        result = scan.measure_backbone(device, rounds=cli.repeats, train=False)
        print(f'\nGlobalMamba-tiny forward, batch {result["batch"]}, {result["size"]} px:')
        print(scan.format_backbone_table(result))
    print(f'\n{machine.finish().describe()}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
