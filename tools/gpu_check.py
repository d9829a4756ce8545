#!/usr/bin/env python
"""CUDA side of ``tools/gpu_check.sh``: report the kernels found, check the CUDA backend
against the PyTorch reference at backbone sizes, and print CUDA-vs-PyTorch speed-ups for
the selective scan and the tiny backbone (or, when the backbone cannot be imported on this
machine, a stand-in stack of 24 mixers at the same shapes).

    python tools/gpu_check.py [--repeats 10] [--skip-scan] [--skip-backbone]

Exit status: 0 when the CUDA backend is available and agrees with the reference.
"""
import argparse
import math
import sys

import torch
import torch.nn.functional as F

from mmglobalmamba import ops
from mmglobalmamba.analysis import scan_benchmark as bench
from mmglobalmamba.ops import dispatch


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
    ok = True
    inputs = bench.make_scan_inputs(2, 384, 16, 1361, device)
    results = {}
    for name in ('cuda', 'torch'):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        out = bench.scan_backend_fn(name)(**leaves)
        out.backward(torch.ones_like(out))
        results[name] = (out.detach(), {k: v.grad for k, v in leaves.items()})
    errs = {'out': rel_err(results['cuda'][0], results['torch'][0])}
    for k in inputs:
        errs['d' + k] = rel_err(results['cuda'][1][k], results['torch'][1][k])
    worst = max(errs.values())
    ok &= worst < 1e-3
    print('selective_scan cuda vs torch (L=1361), max rel err: ' +
          ', '.join(f'{k} {v:.1e}' for k, v in errs.items()) + (' OK' if worst < 1e-3 else
                                                                  ' MISMATCH'))
    return ok


class MixerStack(torch.nn.Module):
    """Stand-in for the backbone's 24 mixers when the backbone cannot be imported: the
    same projections and mamba_inner calls at the tiny shapes (D=192, d_inner=384)."""

    def __init__(self, depth=24, d_model=192, d_state=16, width=4):
        super().__init__()
        d_inner, dt_rank = 2 * d_model, math.ceil(d_model / 16)
        self.layers = torch.nn.ModuleList()
        for _ in range(depth):
            m = torch.nn.Module()
            m.in_proj = torch.nn.Linear(d_model, 2 * d_inner, bias=False)
            m.conv_w = torch.nn.Parameter(torch.randn(d_inner, width) * 0.2)
            m.conv_b = torch.nn.Parameter(torch.zeros(d_inner))
            m.x_proj = torch.nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
            m.dt_proj = torch.nn.Linear(dt_rank, d_inner)
            m.A_log = torch.nn.Parameter(
                torch.log(torch.arange(1, d_state + 1.).repeat(d_inner, 1)))
            m.D = torch.nn.Parameter(torch.ones(d_inner))
            m.out_proj = torch.nn.Linear(d_inner, d_model, bias=False)
            self.layers.append(m)

    def forward(self, h):  # (B, L, D)
        for m in self.layers:
            xz = m.in_proj(F.rms_norm(h, h.shape[-1:])).transpose(1, 2)
            h = h + ops.mamba_inner(xz, m.conv_w, m.conv_b, m.x_proj.weight,
                                    m.dt_proj.weight, m.out_proj.weight, None,
                                    -torch.exp(m.A_log), m.D, m.dt_proj.bias)
        return h


def stand_in_section(args, device):
    model = MixerStack().to(device).eval()
    h = torch.randn(2, 1361, 192, device=device)
    rows = []
    for name in ('cuda', 'torch'):
        def run(name=name):
            with torch.no_grad(), ops.scan_backend(name):
                model(h)
        rows.append((name, bench.time_call(run, device, args.repeats if name == 'cuda' else 1)))
    for name, t in rows:
        print(f'  24-mixer stand-in forward, backend {name:5s}: {bench.fmt(t)}')
    print(f'speed-up of cuda over torch on the 24-mixer stand-in: {rows[1][1] / rows[0][1]:.1f}x')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--skip-scan', action='store_true')
    p.add_argument('--skip-backbone', action='store_true')
    cli = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit('gpu_check: torch sees no CUDA device')
    device = torch.device('cuda')
    if not report_environment():
        sys.exit('gpu_check: the CUDA backend is not available (see above)')
    ok = check_agreement(device)
    if not cli.skip_scan:
        print()
        bench.scan_table(device, repeats=cli.repeats)
    if not cli.skip_backbone:
        print()
        if bench.backbone_table(device, repeats=cli.repeats, train=False) is None:
            print('timing a stand-in stack of 24 mixers at the same shapes instead')
            stand_in_section(cli, device)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
