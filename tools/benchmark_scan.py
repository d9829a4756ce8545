#!/usr/bin/env python
"""Time the selective scan backends (and, with ``--backbone``, the tiny backbone).

Section 1 (always): the fast kernel of the device ('cpu' = our compiled kernel on CPU,
'cuda' = mamba_ssm on GPU) against the PyTorch reference loop and mambapy's parallel scan
(when importable), forward and forward+backward, at B=2, d_inner=384, d_state=16 and
L=1361 (512x512 input) / 4481 (800x1344). The reference is timed once per entry at full
length (seconds); ``--ref-steps N`` times it at L=N only and extrapolates linearly in L
(entries marked ``*``), ``--skip-ref`` leaves it out.

Section 2 (``--backbone``): GlobalMamba-tiny forward at 512x512, batch 2, with each
backend, next to its GEMM floor: the four projections of each of the 24 mixers
(in_proj, x_proj, dt_proj, out_proj) and the four patch-embedding convs, timed as plain
F.linear / F.conv2d at the same shapes in the same run.

    python tools/benchmark_scan.py                 # scan table on CPU
    python tools/benchmark_scan.py --backbone      # + backbone table
    python tools/benchmark_scan.py --device cuda --backbone
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def import_ops():
    """``mmglobalmamba.ops``, even where the package's own ``__init__`` cannot import
    (it also loads the models, which need mmcv / mmengine; the ops need only torch)."""
    import importlib
    import types
    try:
        return importlib.import_module('mmglobalmamba.ops')
    except ImportError as err:
        print(f'note: `import mmglobalmamba` failed ({err}); loading mmglobalmamba.ops alone')
        if 'mmglobalmamba' not in sys.modules:
            pkg = types.ModuleType('mmglobalmamba')
            pkg.__path__ = [os.path.join(ROOT, 'mmglobalmamba')]
            sys.modules['mmglobalmamba'] = pkg
        return importlib.import_module('mmglobalmamba.ops')


ops = import_ops()
available_backends, scan_backend, selective_scan = (
    ops.available_backends, ops.scan_backend, ops.selective_scan)


# --------------------------------------------------------------------------------------
# Timing helpers


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats=3, warmup=1):
    """Best wall time of ``repeats`` calls of ``fn()`` in seconds, after ``warmup`` untimed
    calls (the minimum is the least disturbed by other processes on a shared machine)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def time_interleaved(fns, device, repeats=3, warmup=1):
    """Best wall time of each callable in ``fns`` (name -> fn), run in turns for
    ``repeats`` rounds: a slow spell of a shared machine then hits every entry alike, so
    ratios between them are steadier than with one entry timed after the other."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    best = {name: float('inf') for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def make_inputs(batch, d_inner, d_state, L, device, seed=0):
    """Realistic mixer-like scan inputs (softplus'ed delta, gated by z, with D and bias)."""
    g = torch.Generator().manual_seed(seed)
    f = dict(device=device, dtype=torch.float32)
    return dict(
        u=torch.randn(batch, d_inner, L, generator=g).to(**f),
        delta=(torch.randn(batch, d_inner, L, generator=g) * 0.5 - 2.0).to(**f),
        A=-torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1).to(**f),
        B=torch.randn(batch, d_state, L, generator=g).to(**f),
        C=torch.randn(batch, d_state, L, generator=g).to(**f),
        D=torch.ones(d_inner).to(**f),
        z=torch.randn(batch, d_inner, L, generator=g).to(**f),
        delta_bias=(torch.rand(d_inner, generator=g) - 4.0).to(**f),
    )


def scan_backend_fn(name):
    def run(u, delta, A, B, C, D, z, delta_bias):
        with scan_backend(name):
            return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
    return run


def mambapy_fn():
    """The same scan through mambapy's parallel scan, or None when it is not installed."""
    try:
        from mambapy.pscan import pscan
    except Exception:  # ImportError, or its own imports failing
        return None

    def run(u, delta, A, B, C, D, z, delta_bias):
        dt = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)    # (b, L, d)
        x = u.transpose(1, 2)                                           # (b, L, d)
        dA = torch.exp(dt.unsqueeze(-1) * A)                            # (b, L, d, N)
        BX = (dt * x).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)    # (b, L, d, N)
        hs = pscan(dA, BX)                                              # (b, L, d, N)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1)         # (b, L, d)
        y = (y + D * x) * F.silu(z.transpose(1, 2))
        return y.transpose(1, 2)                                        # (b, d, L)
    return run


def measure(fn, inputs, device, backward, repeats):
    """Forward (no grad) or forward+backward time of ``fn`` on ``inputs``."""
    if not backward:
        def call():
            with torch.no_grad():
                fn(**inputs)
        return time_call(call, device, repeats)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}

    def call():
        for v in leaves.values():
            v.grad = None
        fn(**leaves).sum().backward()
    return time_call(call, device, repeats)


# --------------------------------------------------------------------------------------
# Section 1: the scan


def fmt(t, est=False):
    if t is None:
        return 'n/a'
    s = f'{t * 1e3:.1f} ms' if t < 1 else f'{t:.2f} s'
    return s + ('*' if est else '')


def ratio(a, b, est=False):
    if a is None or b is None:
        return 'n/a'
    return f'{a / b:.1f}x' + ('*' if est else '')


def scan_section(args, device):
    fast = 'cuda' if device.type == 'cuda' else 'cpu'
    have = available_backends()
    if fast not in have:
        print(f"note: backend '{fast}' is not available here ({have}); timing 'torch' only")
        fast = None
    mp = None if args.no_mambapy else mambapy_fn()
    lengths = sorted(args.lengths)
    shape = (args.batch, args.d_inner, args.d_state)
    print(f'== selective scan: B={shape[0]} d_inner={shape[1]} d_state={shape[2]}, '
          f'softplus + delta_bias + D + z gating, fp32, device={device}, '
          f'torch threads={torch.get_num_threads()} ==')

    # The reference: measured lengths and how each table entry is obtained.
    ref = {}  # (L, backward) -> (seconds, extrapolated?)
    if not args.skip_ref:
        for backward in (False, True):
            base = [args.ref_steps] if args.ref_steps else lengths
            measured = {}
            for L in base:
                inputs = make_inputs(*shape, L, device)
                # The reference is slow and deterministic in cost: one timed run.
                measured[L] = measure(scan_backend_fn('torch'), inputs, device, backward,
                                      repeats=1)
            for L in lengths:
                if L in measured:
                    ref[L, backward] = (measured[L], False)
                else:
                    L0 = max(measured)
                    ref[L, backward] = (measured[L0] * L / L0, True)

    rows = []
    for L in lengths:
        inputs = make_inputs(*shape, L, device)
        for backward in (False, True):
            t_fast = (measure(scan_backend_fn(fast), inputs, device, backward, args.repeats)
                      if fast else None)
            t_mp = measure(mp, inputs, device, backward, args.repeats) if mp else None
            t_ref, est = ref.get((L, backward), (None, False))
            rows.append((L, 'fwd+bwd' if backward else 'fwd', t_fast, t_ref, est, t_mp))

    head = ('L', 'pass', f'{fast or "-"} kernel', 'torch ref', 'mambapy pscan',
            'ref / kernel', 'mambapy / kernel')
    table = [head] + [
        (str(L), p, fmt(tf), fmt(tr, est), fmt(tm), ratio(tr, tf, est), ratio(tm, tf))
        for L, p, tf, tr, est, tm in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print('  '.join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print('  '.join('-' * w for w in widths))
    if any(est for *_, est, _ in rows):
        print(f'* torch reference extrapolated linearly in L from a run at '
              f'L={args.ref_steps} (--ref-steps); all other entries measured')
    else:
        print('all entries measured (best of --repeats runs; the torch reference: one run)')
    if args.skip_ref:
        print('torch reference skipped (--skip-ref)')
    if mp is None and not args.no_mambapy:
        print('mambapy not importable: `pip install mambapy --no-deps` to include it')

    if fast == 'cpu':
        for L, p, tf, tr, est, tm in rows:
            if p != 'fwd+bwd':
                continue
            checks = []
            if tr is not None:
                checks.append(f'vs torch ref {tr / tf:.0f}x (target >= 30x): '
                              f'{"OK" if tr / tf >= 30 else "MISSED"}')
            if tm is not None:
                checks.append(f'vs mambapy {tm / tf:.1f}x (target >= 10x): '
                              f'{"OK" if tm / tf >= 10 else "MISSED"}')
            if checks:
                print(f'targets L={L} fwd+bwd: ' + '; '.join(checks))
    return rows


# --------------------------------------------------------------------------------------
# Section 2: the backbone


def gemm_floor(model, x):
    """The backbone's dense work alone, as a callable: per mixer in_proj, x_proj, dt_proj,
    out_proj as F.linear on (B*L, .), plus the patch-embedding conv of every band at the
    image size the serializer gives it (band b < K-1: its token grid times the patch size;
    band K-1: the input). Returns (run, L, number of mixers)."""
    device = x.device
    B, _, H, W = x.shape
    mixers = [m for n, m in model.named_modules() if n.endswith('mixer')]
    with torch.no_grad():
        L = model.embed(x)[0].shape[1]  # tokens + cls
    conv = model.patch_embed.proj
    tokens = torch.randn(B * L, mixers[0].in_proj.in_features, device=device)
    inner = torch.randn(B * L, mixers[0].d_inner, device=device)
    dt_in = torch.randn(B * L, mixers[0].dt_rank, device=device)
    p = conv.stride[0]
    grids = model.serializer.band_grids(H, W)
    images = [torch.randn(B, x.shape[1], p * h, p * w, device=device) for h, w in grids[:-1]]
    images.append(torch.randn_like(x))

    def run():
        with torch.no_grad():
            for img in images:
                F.conv2d(img, conv.weight, conv.bias, stride=conv.stride)
            for m in mixers:
                F.linear(tokens, m.in_proj.weight, m.in_proj.bias)
                F.linear(inner, m.x_proj.weight)
                F.linear(dt_in, m.dt_proj.weight, m.dt_proj.bias)
                F.linear(inner, m.out_proj.weight, m.out_proj.bias)
    return run, L, len(mixers)


def backbone_section(args, device):
    print(f'== GlobalMamba-tiny forward, batch {args.bb_batch}, {args.bb_size}x{args.bb_size}, '
          f'device={device}, torch threads={torch.get_num_threads()} ==')
    try:
        from mmglobalmamba.models.backbones import GlobalMamba
        try:
            model = GlobalMamba(arch='tiny', img_size=224, out_indices=(23, ))
        except ValueError:  # this version wants one pyramid stride per out index
            model = GlobalMamba(arch='tiny', img_size=224, out_indices=(23, ),
                                pyramid_strides=(16, ))
    except Exception as err:  # not written yet, or its dependencies are missing
        print(f'backbone unavailable: {type(err).__name__}: {err}')
        return None
    model = model.to(device).eval()
    x = torch.randn(args.bb_batch, 3, args.bb_size, args.bb_size, device=device)
    floor_fn, L, n_mixers = gemm_floor(model, x)
    backends = [b for b in available_backends()
                if (b == 'cuda') == (device.type == 'cuda') or b == 'torch']
    if args.skip_ref and 'torch' in backends and len(backends) > 1:
        backends.remove('torch')

    def forward(name):
        def run():
            with torch.no_grad(), scan_backend(name):
                model(x)
        return run

    # The floor and the compiled backends in turns, best of --repeats rounds each; the
    # torch backend loops over L in Python: one run after them is enough.
    fast = [b for b in backends if b != 'torch']
    best = time_interleaved({'floor': floor_fn, **{b: forward(b) for b in fast}}, device,
                            args.repeats)
    t_floor = best.pop('floor')
    rows = [(name, best[name]) for name in fast]
    if 'torch' in backends:
        rows.append(('torch', time_call(forward('torch'), device, 1, warmup=0)))
    print(f'sequence length {L}, {n_mixers} mixers; GEMM floor = {n_mixers} x (in_proj + '
          f'x_proj + dt_proj + out_proj) + one patch-embed conv per band')
    head = ('backend', 'forward', 'GEMM floor', 'forward / floor')
    table = [head] + [(n, fmt(t), fmt(t_floor), f'{t / t_floor:.1f}x') for n, t in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print('  '.join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print('  '.join('-' * w for w in widths))
    by = dict(rows)
    fast = 'cuda' if device.type == 'cuda' else 'cpu'
    if fast == 'cpu' and 'cpu' in by:
        ratio = by['cpu'] / t_floor
        print(f'target forward / GEMM floor <= 2x: {ratio:.2f}x '
              f'{"OK" if ratio <= 2 else "MISSED"}')
    if fast in by and 'torch' in by:
        print(f'speed-up of {fast} over torch on the backbone: {by["torch"] / by[fast]:.1f}x')
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    p.add_argument('--lengths', type=int, nargs='+', default=[1361, 4481])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--d-inner', type=int, default=384)
    p.add_argument('--d-state', type=int, default=16)
    p.add_argument('--repeats', type=int, default=3, help='timed runs (best) per entry')
    p.add_argument('--ref-steps', type=int, default=0,
                   help='measure the torch reference at this L only, extrapolate the rest')
    p.add_argument('--skip-ref', action='store_true', help='do not run the torch reference')
    p.add_argument('--no-mambapy', action='store_true')
    p.add_argument('--no-scan', action='store_true', help='skip section 1')
    p.add_argument('--backbone', action='store_true', help='also time the tiny backbone')
    p.add_argument('--bb-size', type=int, default=512)
    p.add_argument('--bb-batch', type=int, default=2)
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: keep)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('CUDA is not available')
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    if load:
        print(f'machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} at start '
              '(other processes slow the timings down)')
    if not args.no_scan:
        scan_section(args, device)
    if args.backbone:
        if not args.no_scan:
            print()
        backbone_section(args, device)
    if load:
        print(f'load average {os.getloadavg()[0]:.2f} at the end')


if __name__ == '__main__':
    main()
