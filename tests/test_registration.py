"""Importing mmglobalmamba registers GlobalMamba for mmseg and mmdet configs with either one
installed, never imports the CUDA kernel packages, and its ops need torch alone.

Each check needs a fresh interpreter: one that has not imported (or is made unable to
import) the packages in question. They start together (conftest's ``fresh_python``). With
both mmseg and mmdet installed, building GlobalMamba in each scope is checked in-process by
test_backbone.py::test_full_model_checkpoint_with_prefix_and_init_keeps_weights."""
import textwrap

import pytest

BUILD = textwrap.dedent('''
    import sys
    sys.modules[{blocked!r}] = None  # as if not installed
    from mmengine.config import Config
    cfg = Config(dict(custom_imports=dict(imports=['mmglobalmamba'],
                                          allow_failed_imports=False)))
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    from {scope}.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('{scope}')
    m = MODELS.build(dict(type='GlobalMamba', arch=dict(embed_dims=32, depth=2),
                          out_indices=(1,), pyramid_strides=(16,)))
    print(type(m).__name__, m.embed_dims)
''')

# The one check that the package (models, engine, ops, backend resolution and a CPU scan
# included) loads no CUDA package, nor mmseg / mmdet.
NO_CUDA = textwrap.dedent('''
    import sys
    import torch
    import mmglobalmamba
    from mmglobalmamba import ops
    assert ops.resolve_backend(None, 'cpu') in ('cpu', 'torch')
    ops.selective_scan(torch.randn(1, 4, 5), torch.rand(1, 4, 5), -torch.rand(4, 2),
                       torch.randn(1, 2, 5), torch.randn(1, 2, 5))  # the default backend
    assert 'mmglobalmamba.models' in sys.modules  # the whole package was imported
    loaded = [m for m in sys.modules if m.split('.')[0] in (
        'mamba_ssm', 'causal_conv1d', 'selective_scan_cuda', 'causal_conv1d_cuda',
        'mmseg', 'mmdet')]
    assert not loaded, loaded
    print('no cuda ok')
''')

TORCH_ALONE = textwrap.dedent('''
    import sys
    STACK = ('mmengine', 'mmcv', 'mmseg', 'mmdet')
    for name in STACK:
        sys.modules[name] = None  # as if not installed
    import torch
    from mmglobalmamba import ops
    u = torch.randn(1, 4, 5)
    out = ops.selective_scan(u, torch.rand(1, 4, 5), -torch.rand(4, 2), torch.randn(1, 2, 5),
                             torch.randn(1, 2, 5), backend='torch')
    assert out.shape == (1, 4, 5)
    loaded = [m for m in sys.modules if m.split('.')[0] in STACK and sys.modules[m]]
    assert not loaded, loaded
    assert 'mmglobalmamba.models' not in sys.modules
    print('ops ok')
''')

SCOPES = [('mmseg', 'mmdet'), ('mmdet', 'mmseg')]
FRESH_PYTHON = {
    **{f'{scope} without {blocked}': ['-c', BUILD.format(scope=scope, blocked=blocked)]
       for scope, blocked in SCOPES},
    'no cuda': ['-c', NO_CUDA],
    'torch alone': ['-c', TORCH_ALONE],
}


@pytest.mark.parametrize('scope,blocked', SCOPES)
def test_registered_in_scope_with_the_other_missing(fresh_python, scope, blocked):
    out = fresh_python(f'{scope} without {blocked}')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'GlobalMamba 32' in out.stdout


def test_import_does_not_load_cuda_kernels(fresh_python):
    out = fresh_python('no cuda')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'no cuda ok' in out.stdout


def test_ops_import_with_torch_alone(fresh_python):
    """On a bare machine (a GPU box with torch and the kernels only) the ops import and run
    without the OpenMMLab stack, and nothing of it gets imported."""
    out = fresh_python('torch alone')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'ops ok' in out.stdout
