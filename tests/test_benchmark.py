"""The benchmarks built on the measurement layer: what they run and report (GEMM floors,
scan passes, inference and train-step rows, the tools), not how fast anything is."""
import math
import os.path as osp
import sys

import pytest
import torch

from mmglobalmamba.benchmark import scan, train_step
from mmglobalmamba.benchmark.throughput import format_throughput, time_inference
from mmglobalmamba.engine.config import build_backbone

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(embed_dims=32, depth=2)


def _run_tool(name, argv, capsys):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        module = __import__(name)
    finally:
        sys.path.pop(0)
    module.main(argv)
    return capsys.readouterr().out


def test_gemm_shapes_cover_every_projection_and_band():
    model = build_backbone(SMALL, out_indices=(1, ), pyramid_strides=(16, )).eval()
    x = torch.randn(1, 3, 64, 96)
    shapes, L = scan.gemm_shapes(model, x)
    with torch.no_grad():
        assert L == model.embed(x)[0].shape[1]
    mixers = [m for n, m in model.named_modules() if n.endswith('mixer')]
    convs = [s for s in shapes if s[0] == 'conv']
    linears = [s for s in shapes if s[0] == 'linear']
    assert len(linears) == 4 * len(mixers) == 4 * 2
    grids = model.serializer.band_grids(64, 96)
    assert [c[2] for c in convs[:-1]] == [(1, 3, 16 * h, 16 * w) for h, w in grids[:-1]]
    assert convs[-1][2] == (1, 3, 64, 96)                      # the last band: the input
    m = mixers[0]
    assert [s[1] for s in linears[:4]] == [m.in_proj, m.x_proj, m.dt_proj, m.out_proj]
    assert [s[2] for s in linears[:4]] == [(L, 32), (L, m.d_inner), (L, m.dt_rank),
                                          (L, m.d_inner)]


def test_gemm_floor_forward_and_backward_values():
    """The floor computes the same products as the modules; its backward forms the
    linears' input gradients and every weight / bias gradient (the conv's image input
    gets none, as in training), leaving the modules' own parameters alone."""
    lin = torch.nn.Linear(6, 5)
    conv = torch.nn.Conv2d(3, 4, 2, stride=2)
    shapes = [('conv', conv, (1, 3, 4, 4)), ('linear', lin, (7, 6))]
    run = scan.gemm_floor(shapes, 'cpu', backward=True)
    run()
    got = sorted(tuple(t.grad.shape) for t in run.leaves)
    assert got == sorted([(4, 3, 2, 2), (4, ), (7, 6), (5, 6), (5, )])
    x = next(t for t in run.leaves if t.shape == (7, 6))
    w = next(t for t in run.leaves if t.shape == (5, 6))
    torch.testing.assert_close(x.grad, w.detach().sum(0).expand(7, 6))  # d sum(x W^T) / dx
    torch.testing.assert_close(w.grad, x.detach().sum(0).expand(5, 6))
    assert lin.weight.grad is None and conv.weight.grad is None


def test_scan_pass_backward_forms_every_gradient():
    inputs = scan.make_scan_inputs(1, 4, 2, 5, 'cpu')
    fn = scan.scan_backend_fn('torch')
    grads = {}

    def spy(**kw):
        out = fn(**kw)
        grads.update(kw)
        return out
    scan.scan_pass(spy, inputs, backward=True)()
    assert set(grads) == set(inputs)
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in grads.values())
    assert all(grads[k] is not v and v.grad is None for k, v in inputs.items())  # copies


def test_measure_scans_rows_and_extrapolated_reference():
    fast, rows = scan.measure_scans('cpu', lengths=(9, 5), batch=1, d_inner=8, d_state=2,
                                    rounds=1, ref_steps=5, use_mambapy=False)
    assert [(r['L'], r['pass_']) for r in rows] == [(5, 'fwd'), (5, 'fwd+bwd'), (9, 'fwd'),
                                                    (9, 'fwd+bwd')]
    assert [r['ref_estimated'] for r in rows] == [False, False, True, True]
    assert all(r['ref'] > 0 for r in rows)
    if fast == 'cpu':
        assert all(r['fast'] > 0 and r['ref_ratio'] == r['ref'] / r['fast'] for r in rows)
    table = scan.format_scan_table(fast, rows).splitlines()
    assert len(table) == 6 and table[4].split()[0] == '9' and '*' in table[4]


def test_inference_row_and_table():
    model = build_backbone(SMALL, out_indices=(1, ), pyramid_strides=(16, )).eval()
    row = time_inference(model, torch.randn(2, 3, 32, 48), 'small-bb', 'torch', iters=2,
                         warmup=0)
    assert row.shape == (32, 48) and row.batch_size == 2 and row.iters == 2
    assert row.best_ms <= row.ms_per_batch
    assert math.isclose(row.images_per_s, 2000 / row.ms_per_batch)
    table = format_throughput([row], markdown=True).splitlines()
    assert table[2].startswith('| small-bb | 32x48 | torch | 2 |')


def test_train_step_rows_with_cp_and_ratios():
    rows = []
    for cp in (False, True):
        torch.manual_seed(0)  # the same random weights for both rows
        rows.append(train_step.time_train_step(SMALL, (32, 32), 2, cp, 'fp32', iters=1,
                                               warmup=1))
    assert all(not r.error and r.ms_per_step > 0 and len(r.losses) == 2 for r in rows)
    # same weights and data: the with_cp step gives the same first loss
    assert abs(rows[0].losses[0] - rows[1].losses[0]) < 1e-5
    ((off, on, mem, t), ) = train_step.with_cp_savings(rows)
    assert (off, on) == (rows[0], rows[1])
    assert mem == off.peak_mib / max(on.peak_mib, 1e-9) and t == on.best_ms / off.best_ms
    other = train_step.TrainStepResult(**dict(vars(rows[0]), name='base', best_ms=2.0))
    ((r, base, ratio), ) = train_step.step_time_ratios(rows + [other], rows[0].name, 'base')
    assert base is other and r is rows[0] and ratio == rows[0].best_ms / 2.0
    table = train_step.format_train_table(rows, markdown=True)
    assert table.count('\n') == 3
    assert '| GlobalMamba(embed_dims=32, depth=2) | 32x32 | 2 | on | fp32 |' in table


def test_train_step_child_failure_is_a_row():
    row = train_step.time_train_step_in_child('no-such-arch', (64, 64), 2,
                                              allocator='glibc', timeout=300)
    assert row.error.startswith('child exited with 1') and 'no-such-arch' in row.error


def test_throughput_tool(capsys):
    out = _run_tool('benchmark_throughput', [
        '--arch', 'tiny@32x48', '--batch-size', '1', '2', '--backend', 'torch', '--iters',
        '1', '--warmup', '0', '--markdown'], capsys)
    rows = [line for line in out.splitlines() if line.startswith('| GlobalMamba-tiny')]
    assert len(rows) == 2 and all('| 32x48 | torch |' in r for r in rows)
    assert 'at start' in out and 'at end' in out                 # the machine line


@pytest.mark.slow
def test_train_step_tool_rows_in_children(capsys):
    """One fresh process per row, under the allocator asked for, with the with_cp line."""
    out = _run_tool('benchmark_train_step', [
        'tiny@32x48', '--batch-size', '2', '--precision', 'fp32', '--allocator', 'glibc',
        '--iters', '1', '--warmup', '1', '--markdown'], capsys)
    assert 'each row in a fresh process; CPU allocator glibc' in out
    rows = [line for line in out.splitlines() if line.startswith('| GlobalMamba-tiny')]
    assert len(rows) == 2 and '| off | fp32 |' in rows[0] and '| on | fp32 |' in rows[1]
    assert 'GlobalMamba-tiny 32x48 b2 fp32: memory' in out


def test_scan_tool(capsys):
    out = _run_tool('benchmark_scan', ['--lengths', '7', '--batch', '1', '--d-inner', '8',
                                       '--d-state', '2', '--repeats', '1', '--no-mambapy'],
                    capsys)
    lines = out.splitlines()
    assert any(line.split()[:2] == ['7', 'fwd+bwd'] for line in lines)
    assert 'torch threads' in out and 'MET' not in out and 'MISSED' not in out


@pytest.mark.slow
def test_scan_tool_backbone_section(capsys):
    out = _run_tool('benchmark_scan', ['--no-scan', '--backbone', '--bb-size', '64',
                                       '--bb-batch', '1', '--repeats', '1'], capsys)
    assert 'L = 23, 24 mixers' in out                # grids 1x1, 1x1, 2x2, 4x4 and the cls
    assert 'torch forward' in out
