"""The resolution sweep (mmglobalmamba.benchmark.resolution, tools/benchmark_resolution.py):
rows from fresh processes, hand-counted tokens, the SDPA ViT equal to mmseg's, failures as
rows. Small models at 64 px; no timed assertions beyond "positive"."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmglobalmamba.benchmark import resolution as res

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(embed_dims=48, depth=2, num_heads=3)


def test_bad_input_is_refused_with_the_reason():
    assert res.parse_size('1248') == (1248, 1248) == res.parse_size(1248)
    assert res.parse_size('800x1344') == (800, 1344) == res.parse_size([800, 1344])
    with pytest.raises(ValueError, match='multiples of the patch size 16'):
        res.parse_size('1000')
    with pytest.raises(ValueError, match='write S'):
        res.parse_size('big')
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['DeiT-Ti'\].*GlobalMamba-T"):
        res.check_models(['GlobalMamba-T', 'DeiT-Ti'])
    with pytest.raises(ValueError, match='unknown model'):
        res.sweep([64], ['ViT-B'])  # checked before any process starts


def test_every_model_measured_in_process():
    """The row of each model (what a child returns), in this process: hand-counted
    tokens and the stride-16 map, no pyramid."""
    rows = {m: res.measure_forward(m, [64, 64], rounds=1, warmup=0, **SMALL)
            for m in res.MODELS}
    # bands 64//8 -> 1x1 (at least), 64//4 -> 1x1, 64//2 -> 2x2, 64 -> 4x4: 1 + 1 + 4 + 16
    assert {m: r['tokens'] for m, r in rows.items()} == {
        'GlobalMamba-T': 22, 'Vim-T': 16, 'ViT-Ti': 16, 'ViT-Ti-SDPA': 16}
    assert all(r['output_shape'] == [1, 48, 4, 4] and r['best_s'] > 0 for r in rows.values())


@pytest.mark.slow
def test_sweep_gives_a_row_per_model_from_fresh_processes():
    rows = res.sweep([64], res.MODELS, rounds=2, warmup=1, threads=1, **SMALL)
    assert [r['model'] for r in rows] == list(res.MODELS)
    for row in rows:
        assert row['error'] is None, row['error']
        assert len(row['times']) == 2 and min(row['times']) > 0
        assert row['best_s'] == min(row['times']) <= row['median_s']
        assert row['peak_mib'] is not None and row['peak_mib'] >= 0
        assert row['output_shape'] == [1, 48, 4, 4]  # the stride-16 map, no pyramid
        assert row['threads'] == 1
    assert len({r['pid'] for r in rows} | {os.getpid()}) == len(rows) + 1
    # Hand counts at 64x64 (docs/algorithm.md 2.4, K = 4, p = 16):
    # bands 64//8 -> 1x1 (at least), 64//4 -> 1x1, 64//2 -> 2x2, 64 -> 4x4: 1 + 1 + 4 + 16
    tokens = {r['model']: r['tokens'] for r in rows}
    assert tokens == {'GlobalMamba-T': 22, 'Vim-T': 16, 'ViT-Ti': 16, 'ViT-Ti-SDPA': 16}
    by_model = {r['model']: r for r in rows}
    assert by_model['GlobalMamba-T']['time_ratio'] == 1.0
    vit = by_model['ViT-Ti']
    assert vit['time_ratio'] == pytest.approx(vit['median_s'] /
                                              by_model['GlobalMamba-T']['median_s'])


@pytest.mark.parametrize('hw', [(64, 64), (48, 80)])
def test_sdpa_vit_equals_mmseg_vit_on_the_same_weights(hw, monkeypatch):
    torch.manual_seed(0)
    vit = res.build_model('ViT-Ti', depth=2)  # DeiT-Ti width: 192, 3 heads
    sdpa = res.use_sdpa(copy.deepcopy(vit))
    assert all(isinstance(layer.attn, res.SDPAAttention) for layer in sdpa.layers)
    assert sdpa.state_dict().keys() == vit.state_dict().keys()  # same keys, same weights
    x = torch.randn(2, 3, *hw)  # pos_embed interpolated from 14x14 by mmseg's own code
    with torch.no_grad():
        want = vit(x)[-1]
        # the swapped model must not reach nn.MultiheadAttention's own forward
        monkeypatch.setattr(torch.nn.MultiheadAttention, 'forward',
                            lambda *a, **k: pytest.fail('nn.MultiheadAttention ran'))
        got = sdpa(x)[-1]
    assert got.shape == want.shape == (2, 192, hw[0] // 16, hw[1] // 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_failing_model_gives_an_error_row():
    row = res.run_row('GlobalMamba-T', 64, rounds=1, depth=0)  # no blocks: fails to build
    assert row['error'] and 'out of range for 0 blocks' in row['error']
    assert row['median_s'] is None and row['size'] == [64, 64]
    ok = dict(row, tokens=22, median_s=0.5, best_s=0.4, peak_mib=10., peak_exact=True,
              error=None)
    rows = res.with_ratios([ok, dict(row, model='Vim-T')])
    assert rows[1]['time_ratio'] is None and rows[1]['memory_ratio'] is None
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import benchmark_resolution as tool
    finally:
        sys.path.pop(0)
    text = tool.table(rows)
    assert 'failed [1]' in text and '[1] Vim-T at 64x64: child exited with 1' in text
    with pytest.raises(SystemExit, match='multiples of the patch size'):
        tool.main(['--sweep', '100'])


@pytest.mark.slow
def test_tool_prints_machine_table_and_command():
    cmd = [sys.executable, 'tools/benchmark_resolution.py', '--sweep', '64', '--models',
           'GlobalMamba-T', '--rounds', '1', '--threads', '1', '--markdown']
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert 'load average' in lines[0] and 'at end' not in lines[0]
    assert any('at start' in line and 'at end' in line for line in lines[1:])
    assert '| model | input | tokens | median ms | best ms | peak MiB | time vs ' \
        'GlobalMamba-T | memory vs GlobalMamba-T |' in lines
    gm = next(line for line in lines if line.startswith('| GlobalMamba-T |'))
    assert '| 64x64 | 22 |' in gm and '| 1.00x |' in gm  # memory: n/a if its peak is 0
    assert 'WITHOUT a feature pyramid' in out.stdout
    assert 'python tools/benchmark_resolution.py --sweep 64 --models GlobalMamba-T ' \
        '--rounds 1 --threads 1 --markdown' in lines
