"""The selective-scan kernels against the PyTorch reference and mambapy, and the backbone
against its GEMM floor.

The library behind ``tools/benchmark_scan.py`` and ``tools/gpu_check.py``: input makers,
per-backend callables, the GEMM floor of the backbone (its dense work alone, forward or
forward + backward) and the two measurements, each timed in interleaved rounds through
:mod:`.measure`. It returns rows and formats tables; it judges nothing.
"""
import torch
import torch.nn.functional as F

from .measure import format_ratio, format_seconds, format_table, time_interleaved

__all__ = [
    'make_scan_inputs', 'scan_backend_fn', 'mambapy_fn', 'scan_pass', 'measure_scans',
    'format_scan_table', 'gemm_shapes', 'gemm_floor', 'measure_backbone',
    'format_backbone_table'
]


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


def scan_pass(fn, inputs, backward):
    """A no-argument callable: ``fn(**inputs)`` forward (no grad) or forward + backward of
    the sum (fresh leaf copies of the inputs get the gradients)."""
    if not backward:
        def forward():
            with torch.no_grad():
                fn(**inputs)
        return forward
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}

    def forward_backward():
        for v in leaves.values():
            v.grad = None
        fn(**leaves).sum().backward()
    return forward_backward


def measure_scans(device, lengths=(1361, 4481), batch=2, d_inner=384, d_state=16,
                  rounds=3, ref_steps=0, skip_ref=False, use_mambapy=True):
    """Time the device's fast backend ('cpu' kernel or 'cuda'), mambapy's pscan (when
    importable) and the torch reference, forward and forward + backward, at each L.

    The fast backend and mambapy run in interleaved rounds (ratio: median over rounds);
    the reference, slow and steady, runs once per entry, at full length or, with
    ``ref_steps``, at L = ``ref_steps`` extrapolated linearly in L. Returns
    (fast backend name or None, rows) with rows dicts of L, pass, the three times
    (seconds, median) and the ratios to the fast backend.
    """
    from mmglobalmamba.ops import available_backends
    device = torch.device(device)
    fast = 'cuda' if device.type == 'cuda' else 'cpu'
    fast = fast if fast in available_backends() else None
    mp = mambapy_fn() if use_mambapy else None
    shape = (batch, d_inner, d_state)
    rows = []
    for L in sorted(lengths):
        inputs = make_scan_inputs(*shape, L, device)
        for backward in (False, True):
            entries = {}
            if fast:
                entries['fast'] = scan_pass(scan_backend_fn(fast), inputs, backward)
            if mp:
                entries['mambapy'] = scan_pass(mp, inputs, backward)
            timings = time_interleaved(entries, device, rounds) if entries else None
            row = dict(L=L, pass_='fwd+bwd' if backward else 'fwd', fast=None, mambapy=None,
                       ref=None, ref_estimated=False, ref_ratio=None, mambapy_ratio=None)
            for name in entries:
                row[name] = timings.median(name)
            if fast and mp:
                row['mambapy_ratio'] = timings.ratio('mambapy', 'fast')
            if not skip_ref:
                L_ref = min(L, ref_steps) if ref_steps else L
                ref_inputs = inputs if L_ref == L else make_scan_inputs(*shape, L_ref, device)
                t = time_interleaved({'ref': scan_pass(scan_backend_fn('torch'), ref_inputs,
                                                       backward)}, device, 1, 0).best('ref')
                row['ref'], row['ref_estimated'] = t * L / L_ref, L_ref != L
                if fast:
                    row['ref_ratio'] = row['ref'] / row['fast']
            rows.append(row)
    return fast, rows


def format_scan_table(fast, rows, markdown=False):
    """The rows of :func:`measure_scans` as one table ('*': extrapolated reference)."""
    header = ['L', 'pass', f'{fast or "-"} kernel', 'torch ref', 'mambapy pscan',
              'ref / kernel', 'mambapy / kernel']
    body = [[r['L'], r['pass_'], format_seconds(r['fast']),
             format_seconds(r['ref'], '*' if r['ref_estimated'] else ''),
             format_seconds(r['mambapy']), format_ratio(r['ref_ratio'], 1),
             format_ratio(r['mambapy_ratio'], 1)] for r in rows]
    return format_table(header, body, markdown)


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


def measure_backbone(device, batch=2, size=512, rounds=3, with_torch=True, train=True):
    """GlobalMamba-tiny (one output, stride 16) forward with the device's fast backend and
    (with ``train``) forward + backward of the mean output, each timed in interleaved
    rounds with its GEMM floor (the same GEMMs alone). With ``with_torch``, one forward
    with the torch reference. Returns dict(L, mixers, rows): rows of entry, median
    seconds, the floor's median and the median over rounds of entry / floor."""
    from mmglobalmamba.engine.config import build_backbone
    from mmglobalmamba.ops import available_backends, scan_backend
    device = torch.device(device)
    model = build_backbone('tiny', out_indices=(23, ), pyramid_strides=(16, ))
    model = model.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)                  # (B, 3, H, W)
    shapes, L = gemm_shapes(model, x)
    fast = 'cuda' if device.type == 'cuda' else 'cpu'

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

    entries = {'floor forward': gemm_floor(shapes, device)}
    if fast in available_backends():
        entries[f'{fast} forward'] = forward(fast)
        if train:
            entries['floor train step'] = gemm_floor(shapes, device, backward=True)
            entries[f'{fast} train step'] = train_step(fast)
    timings = time_interleaved(entries, device, rounds)
    rows = []
    for name in entries:
        if not name.startswith('floor'):
            floor = 'floor ' + name.split(' ', 1)[1]
            rows.append((name, timings.median(name), timings.median(floor),
                         timings.ratio(name, floor)))
    if with_torch:
        t = time_interleaved({'torch': forward('torch')}, device, 1, 0).best('torch')
        floor = timings.median('floor forward')
        rows.append(('torch forward', t, floor, t / floor))
    n_mixers = sum(1 for kind, *_ in shapes if kind == 'linear') // 4
    return dict(L=L, mixers=n_mixers, batch=batch, size=size, rows=rows)


def format_backbone_table(result, markdown=False):
    """The rows of :func:`measure_backbone` as one table."""
    body = [[name, format_seconds(t), format_seconds(floor), format_ratio(ratio)]
            for name, t, floor, ratio in result['rows']]
    return format_table(['entry', 'median time', 'its GEMM floor', 'median ratio'], body,
                        markdown)
