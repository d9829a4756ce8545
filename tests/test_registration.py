"""Importing mmglobalmamba registers GlobalMamba for mmseg and mmdet configs, with either
or both installed, and never imports the CUDA kernel packages."""
import subprocess
import sys
import textwrap

import pytest

BUILD = textwrap.dedent('''
    import sys
    for blocked in {blocked!r}:
        sys.modules[blocked] = None  # as if not installed
    from mmengine.config import Config
    cfg = Config(dict(custom_imports=dict(imports=['mmglobalmamba'],
                                          allow_failed_imports=False)))
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    assert 'mamba_ssm' not in sys.modules and 'causal_conv1d' not in sys.modules
    from {scope}.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('{scope}')
    m = MODELS.build(dict(type='GlobalMamba', arch='tiny', out_indices=(23,),
                          pyramid_strides=(16,)))
    print(type(m).__name__, m.embed_dims)
''')


@pytest.mark.parametrize('scope,blocked', [('mmseg', ['mmdet']), ('mmdet', ['mmseg']),
                                           ('mmseg', []), ('mmdet', [])])
def test_registered_in_scope(scope, blocked):
    code = BUILD.format(scope=scope, blocked=blocked)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'GlobalMamba 192' in out.stdout


def test_import_does_not_load_cuda_kernels():
    code = ('import mmglobalmamba, sys; '
            "assert 'mamba_ssm' not in sys.modules and 'causal_conv1d' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True, timeout=300)


def test_ops_import_with_torch_alone():
    """On a bare machine (a GPU box with torch and the kernels only) the ops import and run
    without the OpenMMLab stack, and nothing of it gets imported."""
    code = textwrap.dedent('''
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
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'ops ok' in out.stdout
