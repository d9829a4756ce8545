"""ONNX export (mmglobalmamba.deploy): the Scan graph against the float64 loop reference,
exported backbones / segmentors run by ONNX Runtime against PyTorch, the torch-free runtime
in a fresh process where torch cannot be imported, the tool, and the errors of bad input."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

onnx = pytest.importorskip('onnx', reason='the deploy extra: pip install -e .[deploy]')
ort = pytest.importorskip('onnxruntime', reason='the deploy extra: pip install -e .[deploy]')

from loop_reference import loop_selective_scan  # noqa: E402
from mmglobalmamba.deploy import onnx_scan  # noqa: E402
from mmglobalmamba.deploy.export import (BackboneFeatures, ExportError, count_nodes,  # noqa: E402
                                         export_config, export_module,
                                         load_checkpoint_strict, load_config)
from mmglobalmamba.deploy.runtime import OnnxModel, normalize_image  # noqa: E402
from mmglobalmamba.deploy.scan_op import (onnx_scan_substitute,  # noqa: E402
                                          translation_table)
from mmglobalmamba.deploy.verify import image_batch, verify  # noqa: E402
from mmglobalmamba.models.backbones.global_mamba import GlobalMamba  # noqa: E402
from mmglobalmamba.ops import selective_scan  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOL = 1e-4  # max |ORT - reference| relative to max |reference|

# A fresh interpreter in which importing torch fails (as where it is not installed).
NO_TORCH_PRELUDE = textwrap.dedent('''
    import sys
    class _Block:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split('.')[0] in {blocked!r}:
                raise ImportError(name + ' is blocked in this test', name=name)
    sys.meta_path.insert(0, _Block())
''')


def run_without(modules, code):
    """Run ``code`` in a fresh interpreter where importing any of ``modules`` fails."""
    program = NO_TORCH_PRELUDE.format(blocked=set(modules)) + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-c', program], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return np.abs(actual - expected).max() / (np.abs(expected).max() + 1e-30)


def session(model_or_path, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = model_or_path.SerializeToString() if hasattr(model_or_path, 'SerializeToString') \
        else model_or_path
    return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])


def all_domains(graph):
    domains = set()
    for node in graph.node:
        domains.add(node.domain)
        for attr in node.attribute:
            if attr.g.node:
                domains |= all_domains(attr.g)
    return domains


# --------------------------------------------------------------------------------------
# The Scan graph alone


@pytest.mark.parametrize('length', [1, 7, 13, 40])
@pytest.mark.parametrize('steps', [1, 3, 8])
@pytest.mark.parametrize('per_channel', [False, True])
def test_scan_graph_matches_float64_loop(length, steps, per_channel):
    batch, dim, N = 2, 6, 5
    g = torch.Generator().manual_seed(length * 10 + steps)
    dt = F.softplus(torch.randn(batch, dim, length, generator=g))       # (b, d, L)
    x = torch.randn(batch, dim, length, generator=g)
    A = -(torch.rand(dim, N, generator=g) + 0.3)
    groups = dim if per_channel else 1
    B = torch.randn(batch, groups, N, length, generator=g)              # (b, G, N, L)
    C = torch.randn(batch, groups, N, length, generator=g)
    expected = loop_selective_scan(x, dt, A, B if per_channel else B[:, 0],
                                   C if per_channel else C[:, 0])       # float64 (b, d, L)
    model = onnx_scan.recurrence_model(batch, dim, groups, N, length, steps=steps)
    assert all_domains(model.graph) == {''}
    feeds = dict(dt=dt.transpose(1, 2).numpy(), x=x.transpose(1, 2).numpy(), A=A.numpy(),
                 B=B.permute(0, 3, 2, 1).numpy(), C=C.permute(0, 3, 2, 1).numpy())
    y = session(model).run(None, feeds)[0]                              # (b, L, d)
    assert rel_err(y.transpose(0, 2, 1), expected.numpy()) < TOL


def test_scan_graph_does_not_grow_with_length():
    small = onnx_scan.recurrence_model(1, 8, 1, 4, 9)
    large = onnx_scan.recurrence_model(1, 8, 1, 4, 5563)
    assert count_nodes(small.graph) == count_nodes(large.graph)
    assert count_nodes(large.graph)[2] == 1                             # one Scan


class _ScanModule(nn.Module):
    """selective_scan with every option, to export alone."""

    def __init__(self, dim, N):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.A = nn.Parameter(-(torch.rand(dim, N, generator=g) + 0.3))
        self.D = nn.Parameter(torch.randn(dim, generator=g))
        self.bias = nn.Parameter(torch.randn(dim, generator=g) * 0.3)

    def forward(self, u, delta, B, C, z):
        return selective_scan(u, delta, self.A, B, C, self.D, z, self.bias,
                              delta_softplus=True)


@pytest.mark.parametrize('bc_shape', ['shared', 'one_group', 'two_groups'])
def test_exported_selective_scan_matches_float64_loop(bc_shape):
    """softplus, delta_bias, D, the silu(z) gate and grouped B/C around the Scan graph,
    through the real export path (placeholder op, translation, expansion)."""
    batch, dim, N, L = 1, 8, 4, 11
    g = torch.Generator().manual_seed(2)
    u, delta, z = (torch.randn(batch, dim, L, generator=g) for _ in range(3))
    delta = delta * 4                               # softplus on both sides of 0, and > 20
    delta[0, 0, 0] = 30.0
    groups = {'shared': None, 'one_group': 1, 'two_groups': 2}[bc_shape]
    shape = (batch, N, L) if groups is None else (batch, groups, N, L)
    B, C = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    module = _ScanModule(dim, N)
    with onnx_scan_substitute():
        program = torch.onnx.export(module, (u, delta, B, C, z), dynamo=True, verbose=False,
                                    custom_translation_table=translation_table())
    model = program.model_proto
    assert onnx_scan.expand_placeholders(model, steps=4) == 1
    onnx.checker.check_model(model, full_check=True)
    assert all_domains(model.graph) == {''}
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, (t.numpy() for t in (u, delta, B, C, z))))
    y = session(model).run(None, feeds)[0]
    expected = loop_selective_scan(u, delta, module.A.detach(), B, C, module.D.detach(), z,
                                   module.bias.detach(), delta_softplus=True)
    assert rel_err(y, expected.numpy()) < TOL


# --------------------------------------------------------------------------------------
# Backbones


def _export_backbone(tmp_path, name, backbone, shape, batch=1):
    module = BackboneFeatures(backbone).eval()
    inputs = torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(3))
    result = export_module(module, inputs, str(tmp_path / f'{name}.onnx'),
                           dict(kind='backbone', mean=[0.0] * 3, std=[1.0] * 3,
                                bgr_to_rgb=False))
    return module, inputs, result


def _check_against_pytorch(module, inputs, path):
    with torch.no_grad():
        expected = module(inputs)
    outputs = OnnxModel(path, threads=1).run(inputs.numpy())
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        assert rel_err(out, ref.numpy()) < TOL


@pytest.mark.parametrize('shape', [(64, 64), (48, 96)], ids=['square', 'non_square'])
def test_backbone_export_matches_pytorch(tmp_path, shape):
    torch.manual_seed(0)
    backbone = GlobalMamba(arch=dict(embed_dims=32, depth=2), out_indices=(0, 1),
                           pyramid_strides=(8, 16))
    module, inputs, result = _export_backbone(tmp_path, 'backbone', backbone, shape)
    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)
    assert all_domains(model.graph) == {''}
    assert result.scans == 2
    _check_against_pytorch(module, inputs, result.path)


def test_vim_baseline_export_matches_pytorch(tmp_path):
    """Raster order with both scan directions (Vim), batch 2."""
    torch.manual_seed(0)
    backbone = GlobalMamba(arch=dict(embed_dims=32, depth=2), serialization='raster',
                           bimamba=True, out_indices=(0, 1), pyramid_strides=(16, 32))
    module, inputs, result = _export_backbone(tmp_path, 'vim', backbone, (64, 80), batch=2)
    assert result.scans == 4                                            # 2 blocks x 2 directions
    _check_against_pytorch(module, inputs, result.path)


def _scan_node_count(path):
    """Nodes written for the scans (prefix 'selective_scan_'), Scan bodies included."""
    graph = onnx.load(path).graph
    return sum(count_nodes(onnx.helper.make_graph([n], 'g', [], []))[1]
               for n in graph.node if n.name.startswith('selective_scan_'))


@pytest.mark.slow
def test_backbone_graph_does_not_grow_with_tokens(tmp_path):
    """The scan's nodes are the same at L = 23 and L = 255 (both padded to a multiple of the
    steps per iteration); the rest of the graph differs only by the ops the serializer and
    position resize spend per band grid (a few percent; an unrolled scan would grow 11x)."""
    torch.manual_seed(0)
    results = []
    for shape in [(64, 64), (192, 256)]:
        backbone = GlobalMamba(arch=dict(embed_dims=32, depth=1), out_indices=(0, ),
                               pyramid_strides=(16, ))
        results.append(_export_backbone(tmp_path, f'b{shape[0]}', backbone, shape)[2])
    small, large = results
    assert _scan_node_count(small.path) == _scan_node_count(large.path) > 20
    assert abs(small.nodes_total - large.nodes_total) <= 0.1 * small.nodes_total


# --------------------------------------------------------------------------------------
# Segmentors, the runtime, the tool

TINY_SEGMENTOR = '''
_base_ = {base!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=2),
                  out_indices=(0, 0, 1, 1)),
    decode_head=dict(in_channels=[32] * 4, channels=32),
    auxiliary_head=dict(in_channels=32, channels=16))
'''


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('configs') / 'upernet_tiny_test.py'
    path.write_text(TINY_SEGMENTOR.format(
        base=osp.join(ROOT, 'configs', 'upernet_globalmamba_ade20k.py')))
    return str(path)


@pytest.fixture(scope='module')
def tiny_segmentor(tiny_config, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('onnx') / 'upernet_tiny.onnx')
    torch.manual_seed(0)
    result, module = export_config(tiny_config, (64, 96), out)
    return result, module


def _photo(size=None):
    from skimage import data
    image = data.coffee()                                               # (400, 600, 3) RGB
    return image if size is None else image[:size[0], :size[1]]


def test_segmentor_export_and_verify(tiny_segmentor):
    result, module = tiny_segmentor
    assert result.kind == 'segmentor' and result.output_shapes['logits'] == (1, 150, 16, 24)
    meta = OnnxModel(result.path).metadata
    assert meta['kind'] == 'segmentor' and len(meta['classes']) == 150
    assert meta['mean'] == [123.675, 116.28, 103.53] and meta['bgr_to_rgb'] is True
    checked = verify(module, result.path, image_batch(_photo(), 1, (64, 96), meta))
    assert checked.returncode == 0, checked.text
    row = checked.report['outputs'][0]
    assert row['relative'] < TOL and row['argmax_agreement'] >= 0.999
    assert checked.report['torch_imported'] is False
    assert 'argmax agrees on' in checked.text


def test_verify_fails_over_tolerance(tiny_segmentor):
    """The check can fail: a model that differs from the file gives a non-zero status."""
    result, module = tiny_segmentor
    meta = OnnxModel(result.path).metadata
    inputs = image_batch(_photo(), 1, (64, 96), meta)

    class Shifted(nn.Module):
        def forward(self, x):
            return module(x) + 0.01

    checked = verify(Shifted(), result.path, inputs)
    assert checked.returncode == 1 and not checked.report['within_tolerance']


def test_runtime_predict_without_torch(tiny_segmentor, tmp_path):
    """OnnxSegmentor in a fresh process where torch cannot load, against PyTorch's
    prediction (same normalization, mmseg's bilinear resize of the logits, argmax)."""
    result, module = tiny_segmentor
    image = _photo((150, 210))
    np.save(tmp_path / 'image.npy', image)
    proc = run_without({'torch'}, f'''
        import numpy as np
        from mmglobalmamba.deploy import OnnxSegmentor
        seg = OnnxSegmentor({result.path!r})
        labels = seg.predict(np.load({str(tmp_path / 'image.npy')!r}))
        np.save({str(tmp_path / 'labels.npy')!r}, labels)
        print(len(seg.classes), labels.shape, 'torch' in sys.modules)
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['150', '(150,', '210)', 'False']
    meta = OnnxModel(result.path).metadata
    inputs = normalize_image(image, (64, 96), meta['mean'], meta['std'], meta['bgr_to_rgb'])
    with torch.no_grad():
        logits = module(torch.from_numpy(inputs)[None])
    expected = F.interpolate(logits, size=image.shape[:2], mode='bilinear',
                             align_corners=False).argmax(1)[0].numpy()
    labels = np.load(tmp_path / 'labels.npy')
    assert (labels == expected).mean() >= 0.999


def test_runtime_without_onnxruntime_says_how_to_install(tiny_segmentor):
    result, _ = tiny_segmentor
    proc = run_without({'torch', 'onnxruntime'}, f'''
        from mmglobalmamba.deploy import OnnxSegmentor
        try:
            OnnxSegmentor({result.path!r})
        except ImportError as err:
            print(err)
    ''')
    assert proc.returncode == 0, proc.stderr
    assert 'pip install -e .[deploy]' in proc.stdout
    assert 'requirements/deploy.txt' in proc.stdout


@pytest.mark.slow
def test_tool_exports_verifies_and_benchmarks(tiny_config, tmp_path, capsys):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import export_onnx
    finally:
        sys.path.pop(0)
    from skimage import io
    photo = str(tmp_path / 'photo.png')
    io.imsave(photo, _photo())
    out = str(tmp_path / 'seg.onnx')
    status = export_onnx.main([tiny_config, '--shape', '64', '64', '--out', out,
                               '--verify', photo, '--benchmark', '--rounds', '1'])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert 'exported segmentor (1, 3, 64, 64) -> logits (1, 150, 16, 16)' in printed
    assert 'exported backbone' in printed and osp.exists(str(tmp_path / 'seg.backbone.onnx'))
    assert 'argmax agrees on' in printed and 'torch imported: False' in printed
    assert 'ORT / PyTorch' in printed and 'machine: ' in printed
    assert 'ORT profile of segmentor' in printed and 'Scan' in printed


# --------------------------------------------------------------------------------------
# Bad input


def test_shape_under_the_floor_gives_the_backbones_message(tiny_config, tmp_path):
    backbone = GlobalMamba(arch=dict(embed_dims=32, depth=1), out_indices=(0, ),
                           pyramid_strides=(16, ))
    with pytest.raises(ValueError) as own:
        backbone(torch.zeros(1, 3, 8, 40))
    with pytest.raises(ValueError) as err:
        export_config(tiny_config, (8, 40), str(tmp_path / 'x.onnx'))
    assert str(err.value) == str(own.value)
    assert 'smaller than one 16x16 patch' in str(err.value)


def test_checkpoint_that_does_not_fit_names_the_keys(tiny_config, tmp_path):
    from mmglobalmamba.engine.config import build_model_on_cpu
    model = build_model_on_cpu(load_config(tiny_config), pretrained=False)
    state = model.state_dict()
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': state}, good)
    fresh = build_model_on_cpu(load_config(tiny_config), pretrained=False)
    load_checkpoint_strict(fresh, str(good))                            # fits: loads
    assert torch.equal(fresh.backbone.pos_embed, model.backbone.pos_embed)

    bad = dict(state)
    bad.pop('decode_head.conv_seg.weight')
    bad['backbone.pos_embed'] = torch.zeros(1, 7, 32)
    bad['extra.weight'] = torch.zeros(1)
    torch.save({'state_dict': bad}, tmp_path / 'bad.pth')
    with pytest.raises(ExportError) as err:
        export_config(tiny_config, (64, 64), str(tmp_path / 'x.onnx'),
                      checkpoint=str(tmp_path / 'bad.pth'))
    message = str(err.value)
    assert 'decode_head.conv_seg.weight' in message and 'extra.weight' in message
    assert 'backbone.pos_embed (checkpoint (1, 7, 32), model (1, 256, 32))' in message


def test_detector_needs_backbone_only(tmp_path):
    config = osp.join(ROOT, 'configs', 'mask-rcnn_globalmamba_fpn_1x_coco.py')
    with pytest.raises(ExportError) as err:
        export_config(config, (64, 64), str(tmp_path / 'x.onnx'))
    message = str(err.value)
    assert 'NMS' in message and 'RoIAlign' in message and '--backbone-only' in message


@pytest.mark.slow
def test_detector_backbone_only_exports(tmp_path):
    config = tmp_path / 'mask_rcnn_tiny.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {osp.join(ROOT, 'configs', 'mask-rcnn_globalmamba_fpn_1x_coco.py')!r}
        model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=2),
                                   out_indices=(0, 0, 1, 1)),
                     neck=dict(in_channels=[32] * 4))
    '''))
    result, module = export_config(str(config), (64, 64), str(tmp_path / 'det.onnx'),
                                   backbone_only=True)
    assert result.kind == 'backbone' and len(result.output_shapes) == 4
    inputs = torch.randn(1, 3, 64, 64)
    _check_against_pytorch(module, inputs, result.path)


# --------------------------------------------------------------------------------------
# The real config


@pytest.mark.slow
def test_tiny_upernet_512_export_and_verify(tmp_path):
    """UperNet-GlobalMamba-T at 512x512 on a photo: within 1e-4, argmax >= 99.9%."""
    config = osp.join(ROOT, 'configs', 'upernet_globalmamba_ade20k.py')
    torch.manual_seed(0)
    result, module = export_config(config, (512, 512), str(tmp_path / 'upernet.onnx'))
    assert result.scans == 24 and result.output_shapes['logits'] == (1, 150, 128, 128)
    meta = OnnxModel(result.path).metadata
    checked = verify(module, result.path, image_batch(_photo(), 1, (512, 512), meta))
    assert checked.returncode == 0, checked.text
    row = checked.report['outputs'][0]
    assert row['relative'] < TOL and row['argmax_agreement'] >= 0.999
