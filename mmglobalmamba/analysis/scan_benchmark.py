"""Timing the selective scan backends and the backbone against its GEMM floor.

The library behind ``tools/benchmark_scan.py`` and ``tools/gpu_check.py``: input makers,
per-backend callables, timers that run entries in turns (a slow spell of a shared machine
then hits every entry alike), the GEMM floor of the backbone (its dense work alone, forward
or forward + backward) and table formatting. Needs only torch (and the backbone for
:func:`backbone_table`).
"""
import statistics
import time

import torch
import torch.nn.functional as F

__all__ = [
    'sync', 'time_call', 'time_interleaved', 'make_scan_inputs', 'scan_backend_fn',
    'mambapy_fn', 'measure', 'fmt', 'ratio', 'format_table', 'gemm_shapes', 'gemm_floor',
    'scan_table', 'backbone_table'
]


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats=3, warmup=1):
    """Best wall time of ``repeats`` calls of ``fn()`` in seconds, after ``warmup`` untimed
    calls (the minimum is the least disturbed by other processes on a shared machine)."""
    return min(time_interleaved({'fn': fn}, device, repeats, warmup)['fn'])


def time_interleaved(fns, device, repeats=3, warmup=1):
    """Wall times of each callable in ``fns`` (name -> fn) run in turns: ``warmup`` untimed
    rounds, then ``repeats`` timed rounds, each calling every entry once in order. Returns
    name -> list of ``repeats`` seconds (round order), so ratios can be taken per round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def make_scan_inputs(batch, d_inner, d_state, L, device, seed=0):
    """Realistic mixer-like scan inputs (softplus'ed delta, gated by z, with D and bias),
    (batch, dim, L) layout."""
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
    """The scan of ``make_scan_inputs``' arguments through backend ``name``."""
    from mmglobalmamba.ops import scan_backend, selective_scan

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
    """Best forward (no grad) or forward+backward time of ``fn(**inputs)``."""
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


def fmt(t, est=False):
    """Seconds as '12.3 ms' / '1.23 s' ('*' marks an extrapolated entry)."""
    if t is None:
        return 'n/a'
    s = f'{t * 1e3:.1f} ms' if t < 1 else f'{t:.2f} s'
    return s + ('*' if est else '')


def ratio(a, b, est=False):
    if a is None or b is None:
        return 'n/a'
    return f'{a / b:.1f}x' + ('*' if est else '')


def format_table(head, rows):
    """Right-aligned text table: a header, a rule, the rows (all strings)."""
    table = [tuple(head)] + [tuple(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ['  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return lines


# --------------------------------------------------------------------------------------
# The scan


def scan_table(device, lengths=(1361, 4481), batch=2, d_inner=384, d_state=16, repeats=3,
               ref_steps=0, skip_ref=False, use_mambapy=True, out=print):
    """Time the device's fast scan backend, the torch reference and mambapy's pscan,
    forward and forward+backward; print the table and the targets through ``out``.
    Returns rows (L, pass, t_fast, t_ref, ref_extrapolated, t_mambapy)."""
    from mmglobalmamba.ops import available_backends
    device = torch.device(device)
    fast = 'cuda' if device.type == 'cuda' else 'cpu'
    if fast not in available_backends():
        out(f"note: backend '{fast}' is not available here; timing 'torch' only")
        fast = None
    mp = mambapy_fn() if use_mambapy else None
    lengths = sorted(lengths)
    shape = (batch, d_inner, d_state)
    out(f'== selective scan: B={batch} d_inner={d_inner} d_state={d_state}, softplus + '
        f'delta_bias + D + z gating, fp32, device={device}, '
        f'torch threads={torch.get_num_threads()} ==')
    ref = {}  # (L, backward) -> (seconds, extrapolated?)
    if not skip_ref:
        for backward in (False, True):
            measured = {L: measure(scan_backend_fn('torch'), make_scan_inputs(*shape, L, device),
                                   device, backward, repeats=1)  # slow, steady: one run
                        for L in ([ref_steps] if ref_steps else lengths)}
            for L in lengths:
                L0 = L if L in measured else max(measured)
                ref[L, backward] = (measured[L0] * L / L0, L0 != L)
    rows = []
    for L in lengths:
        inputs = make_scan_inputs(*shape, L, device)
        for backward in (False, True):
            t_fast = (measure(scan_backend_fn(fast), inputs, device, backward, repeats)
                      if fast else None)
            t_mp = measure(mp, inputs, device, backward, repeats) if mp else None
            t_ref, est = ref.get((L, backward), (None, False))
            rows.append((L, 'fwd+bwd' if backward else 'fwd', t_fast, t_ref, est, t_mp))
    head = ('L', 'pass', f'{fast or "-"} kernel', 'torch ref', 'mambapy pscan',
            'ref / kernel', 'mambapy / kernel')
    for line in format_table(head, [(str(L), p, fmt(tf), fmt(tr, est), fmt(tm),
                                     ratio(tr, tf, est), ratio(tm, tf))
                                    for L, p, tf, tr, est, tm in rows]):
        out(line)
    if any(r[4] for r in rows):
        out(f'* torch reference extrapolated linearly in L from a run at L={ref_steps}')
    if mp is None and use_mambapy:
        out('mambapy not importable: `pip install mambapy --no-deps` to include it')
    if fast == 'cpu':
        for L, p, tf, tr, est, tm in rows:
            checks = []
            if p == 'fwd+bwd' and tr is not None:
                checks.append(f'vs torch ref {tr / tf:.0f}x (target >= 30x): '
                              f'{"OK" if tr / tf >= 30 else "MISSED"}')
            if p == 'fwd+bwd' and tm is not None:
                checks.append(f'vs mambapy {tm / tf:.1f}x (target >= 10x): '
                              f'{"OK" if tm / tf >= 10 else "MISSED"}')
            if checks:
                out(f'targets L={L} fwd+bwd: ' + '; '.join(checks))
    return rows


# --------------------------------------------------------------------------------------
# The backbone against its GEMM floor


def gemm_shapes(model, x):
    """The backbone's dense work at input ``x`` as a list of
    ``(kind, module, input_shape)``: per mixer in_proj, x_proj, dt_proj, out_proj
    (kind 'linear', input (B*L, in_features)), and the patch-embedding conv of every band
    at the image size the serializer gives it (kind 'conv': band b < K-1 its token grid
    times the patch size, band K-1 the input). Also returns L (tokens + cls)."""
    B, _, H, W = x.shape
    mixers = [m for n, m in model.named_modules() if n.endswith('mixer')]
    with torch.no_grad():
        L = model.embed(x)[0].shape[1]
    conv = model.patch_embed.proj
    p = conv.stride[0]
    shapes = [('conv', conv, (B, x.shape[1], p * h, p * w))
              for h, w in model.serializer.band_grids(H, W)[:-1]]
    shapes.append(('conv', conv, tuple(x.shape)))
    for m in mixers:
        shapes += [('linear', m.in_proj, (B * L, m.in_proj.in_features)),
                   ('linear', m.x_proj, (B * L, m.d_inner)),
                   ('linear', m.dt_proj, (B * L, m.dt_rank)),
                   ('linear', m.out_proj, (B * L, m.d_inner))]
    return shapes, L


def gemm_floor(shapes, device, backward=False):
    """A callable running the GEMMs of ``gemm_shapes`` alone: forward only (no grad), or
    forward and backward (the linears' inputs and all weights require grad; the convs'
    image inputs do not, as in training; ``run.leaves``: the tensors that get gradients)."""
    inputs, params = [], []
    for kind, mod, shape in shapes:
        inputs.append(torch.randn(shape, device=device,
                                  requires_grad=backward and kind == 'linear'))
        params.append([p.detach().clone().requires_grad_(backward)
                       for p in (mod.weight, mod.bias) if p is not None])

    def forward():
        outs = []
        for (kind, mod, _), x, ps in zip(shapes, inputs, params):
            bias = ps[1] if len(ps) > 1 else None
            outs.append(F.conv2d(x, ps[0], bias, stride=mod.stride) if kind == 'conv' else
                        F.linear(x, ps[0], bias))
        return outs

    if not backward:
        def run():
            with torch.no_grad():
                forward()
        return run

    leaves = [t for t in inputs + [p for ps in params for p in ps] if t.requires_grad]

    def run_train():
        for t in leaves:
            t.grad = None
        outs = forward()
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    run_train.leaves = leaves  # their .grad: what the last call formed
    return run_train


def _median_ratio(num, den):
    return statistics.median(a / b for a, b in zip(num, den))


def backbone_table(device, batch=2, size=512, repeats=3, with_torch=True, train=True,
                   out=print):
    """GlobalMamba-tiny forward (and, with ``train``, forward + backward of the mean
    output) with each compiled backend, timed in turns with its GEMM floor (forward, resp.
    forward + backward, of the same GEMMs). Ratios are the median over the rounds.
    Returns {entry: ratio to its floor}, or None when the backbone cannot be built."""
    from mmglobalmamba.ops import available_backends, scan_backend
    device = torch.device(device)
    try:
        from mmglobalmamba.models.backbones import GlobalMamba
        try:
            model = GlobalMamba(arch='tiny', img_size=224, out_indices=(23, ))
        except ValueError:  # this version wants one pyramid stride per out index
            model = GlobalMamba(arch='tiny', img_size=224, out_indices=(23, ),
                                pyramid_strides=(16, ))
    except Exception as err:  # dependencies missing on this machine
        out(f'backbone unavailable: {type(err).__name__}: {err}')
        return None
    model = model.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    shapes, L = gemm_shapes(model, x)
    fast = 'cuda' if device.type == 'cuda' else 'cpu'
    out(f'== GlobalMamba-tiny, batch {batch}, {size}x{size}, device={device}, '
        f'torch threads={torch.get_num_threads()} ==')
    n_mixers = sum(1 for kind, *_ in shapes if kind == 'linear') // 4
    out(f'sequence length {L}, {n_mixers} mixers; GEMM floor = {n_mixers} x (in_proj + '
        f'x_proj + dt_proj + out_proj) + one patch-embed conv per band, timed in turns '
        f'with each entry ({repeats} rounds, ratio = median over rounds)')

    def forward(name):
        def run():
            with torch.no_grad(), scan_backend(name):
                model(x)
        return run

    def train_step(name):
        def run():
            with scan_backend(name):
                sum(o.float().mean() for o in model(x)).backward()
            model.zero_grad(set_to_none=True)
        return run

    entries = {'floor fwd': gemm_floor(shapes, device)}
    if fast in available_backends():
        entries[f'{fast} fwd'] = forward(fast)
        if train:
            entries['floor fwd+bwd'] = gemm_floor(shapes, device, backward=True)
            entries[f'{fast} fwd+bwd'] = train_step(fast)
    times = time_interleaved(entries, device, repeats)
    rows, ratios = [], {}
    for name in [n for n in entries if not n.startswith('floor')]:
        floor = times['floor ' + name.split()[1]]
        ratios[name] = _median_ratio(times[name], floor)
        rows.append((name.replace('fwd+bwd', 'train step').replace('fwd', 'forward'),
                     fmt(statistics.median(times[name])), fmt(statistics.median(floor)),
                     f'{ratios[name]:.2f}x'))
    t_torch = None
    if with_torch:
        t_torch, floor = time_call(forward('torch'), device, 1, 0), min(times['floor fwd'])
        rows.append(('torch forward', fmt(t_torch), fmt(floor), f'{t_torch / floor:.1f}x'))
    for line in format_table(('entry', 'median time', 'its GEMM floor', 'median ratio'),
                             rows):
        out(line)
    if t_torch is not None and f'{fast} fwd' in times:
        out(f'speed-up of {fast} over torch on the backbone forward: '
            f'{t_torch / min(times[fast + " fwd"]):.1f}x')
    if fast == 'cpu':
        for name, target in (('cpu fwd', 1.5), ('cpu fwd+bwd', 1.8)):
            if name in ratios:
                out(f'target {name.replace("fwd+bwd", "train step").replace("fwd", "forward")}'
                    f' / GEMM floor <= {target}x: {ratios[name]:.2f}x '
                    f'{"OK" if ratios[name] <= target else "MISSED"}')
    return ratios
