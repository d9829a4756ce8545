"""The benchmark library (mmglobalmamba.analysis.scan_benchmark): what it times, not how
fast anything is (no timed assertions)."""
import torch

from mmglobalmamba.analysis import scan_benchmark as sb


def test_time_interleaved_runs_entries_in_turns():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ('a', 'b', 'c')}
    times = sb.time_interleaved(fns, 'cpu', repeats=3, warmup=1)
    assert calls == ['a', 'b', 'c'] * 4                # one warm-up round, three timed
    assert set(times) == {'a', 'b', 'c'}
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())
    assert sb.time_call(lambda: calls.append('x'), 'cpu', repeats=2, warmup=1) >= 0
    assert calls[-3:] == ['x'] * 3


def test_format_table_aligns_columns():
    lines = sb.format_table(('name', 'time'), [('cpu', '1.0 ms'), ('torch', '12.0 ms')])
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[1].replace(' ', '').strip('-') == ''
    assert sb.fmt(0.0123) == '12.3 ms' and sb.fmt(2.5, est=True) == '2.50 s*'
    assert sb.ratio(3.0, 1.5) == '2.0x' and sb.ratio(None, 1.0) == 'n/a'


def _tiny_backbone():
    from mmglobalmamba.models.backbones import GlobalMamba
    try:
        return GlobalMamba(arch='tiny', img_size=224, out_indices=(23, )).eval()
    except ValueError:
        return GlobalMamba(arch='tiny', img_size=224, out_indices=(23, ),
                           pyramid_strides=(16, )).eval()


def test_gemm_floor_shapes_and_count():
    model = _tiny_backbone()
    x = torch.randn(1, 3, 64, 64)
    shapes, L = sb.gemm_shapes(model, x)
    with torch.no_grad():
        assert L == model.embed(x)[0].shape[1]
    mixers = [m for n, m in model.named_modules() if n.endswith('mixer')]
    convs = [s for s in shapes if s[0] == 'conv']
    linears = [s for s in shapes if s[0] == 'linear']
    assert len(linears) == 4 * len(mixers) == 4 * 24
    assert len(convs) == len(model.serializer.band_grids(64, 64))
    assert convs[-1][2] == (1, 3, 64, 64)                      # the last band: the input
    m = mixers[0]
    assert [s[1] for s in linears[:4]] == [m.in_proj, m.x_proj, m.dt_proj, m.out_proj]
    assert [s[2] for s in linears[:4]] == [(L, 192), (L, m.d_inner), (L, m.dt_rank),
                                          (L, m.d_inner)]


def test_gemm_floor_forward_and_backward_run():
    """The train floor runs the GEMMs' backward: the linears' input gradients and every
    weight / bias gradient are formed (the conv's image input gets none, as in training);
    the module's own parameters are not touched."""
    lin = torch.nn.Linear(6, 5)
    conv = torch.nn.Conv2d(3, 4, 2, stride=2)
    shapes = [('conv', conv, (1, 3, 4, 4)), ('linear', lin, (7, 6))]
    sb.gemm_floor(shapes, 'cpu')()
    run = sb.gemm_floor(shapes, 'cpu', backward=True)
    run()
    got = sorted(tuple(t.grad.shape) for t in run.leaves)
    assert got == sorted([(4, 3, 2, 2), (4, ), (7, 6), (5, 6), (5, )])
    assert lin.weight.grad is None and conv.weight.grad is None
