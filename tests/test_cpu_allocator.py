"""The CPU allocator helpers, and train-step rows measured in a fresh process under one."""
import math
import subprocess
import sys

import pytest

from mmglobalmamba.engine import cpu_allocator
from mmglobalmamba.engine.cpu_allocator import (allocator_env, allocator_from_maps,
                                                find_allocator, loaded_allocator,
                                                reexec_under, resolve_allocator)


def _have(name):
    try:
        find_allocator(name)
        return True
    except FileNotFoundError:
        return False


needs_tcmalloc = pytest.mark.skipif(not _have('tcmalloc'),
                                    reason='tcmalloc not installed (tools/setup_env.sh '
                                    'installs it where apt-get can)')

MAPS = """\
7f0000000000-7f0000001000 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000002000-7f0000003000 r-xp 00000000 08:01 2 /opt/tcmalloc_build/libfoo.so
"""


def test_allocator_from_maps():
    assert allocator_from_maps(MAPS) == 'glibc'  # 'tcmalloc' in a folder name is not it
    tc = MAPS + '7f1-7f2 r-xp 0 08:01 3 /usr/lib/libtcmalloc_minimal.so.4.5.10\n'
    je = MAPS + '7f1-7f2 r-xp 0 08:01 3 /opt/conda/lib/libjemalloc.so.2\n'
    assert allocator_from_maps(tc) == 'tcmalloc'
    assert allocator_from_maps(je) == 'jemalloc'
    assert allocator_from_maps('') == 'glibc'


def test_find_allocator(tmp_path):
    empty, libs = tmp_path / 'empty', tmp_path / 'lib'
    empty.mkdir()
    libs.mkdir()
    (libs / 'libjemalloc.so.2').write_bytes(b'')
    assert find_allocator('jemalloc', [str(empty), str(libs)]) == str(libs / 'libjemalloc.so.2')
    with pytest.raises(FileNotFoundError, match='apt-get install libtcmalloc-minimal4'):
        find_allocator('tcmalloc', [str(empty)])
    with pytest.raises(ValueError, match='unknown CPU allocator'):
        find_allocator('mimalloc')
    with pytest.raises(ValueError, match='no library to preload'):
        find_allocator('glibc')


def test_resolve_allocator(monkeypatch):
    assert resolve_allocator('auto') == ('tcmalloc' if _have('tcmalloc') else 'glibc')
    assert resolve_allocator('glibc') == 'glibc'
    with pytest.raises(ValueError, match='unknown CPU allocator'):
        resolve_allocator('mimalloc')

    def missing(name):
        raise FileNotFoundError(f'{name} not found')
    monkeypatch.setattr(cpu_allocator, 'find_allocator', missing)
    assert resolve_allocator('auto') == 'glibc'
    with pytest.raises(FileNotFoundError, match='jemalloc not found'):
        resolve_allocator('jemalloc')


def test_allocator_env(monkeypatch):
    monkeypatch.setattr(cpu_allocator, 'find_allocator', lambda name: f'/x/lib{name}.so.4')
    env = {'LD_PRELOAD': '/a/libfoo.so:/usr/lib/libjemalloc.so.2', 'PATH': '/bin'}
    assert allocator_env('tcmalloc', env)['LD_PRELOAD'] == '/x/libtcmalloc.so.4:/a/libfoo.so'
    assert allocator_env('glibc', env)['LD_PRELOAD'] == '/a/libfoo.so'
    assert 'LD_PRELOAD' not in allocator_env('glibc', {'LD_PRELOAD': '/y/libjemalloc.so.2'})
    assert env['LD_PRELOAD'] == '/a/libfoo.so:/usr/lib/libjemalloc.so.2'  # not modified
    assert allocator_env('glibc', env)['PATH'] == '/bin'


def test_reexec_refuses_to_loop(monkeypatch):
    if loaded_allocator() == 'tcmalloc':
        pytest.skip('this test process already runs under tcmalloc')
    monkeypatch.setenv('MMGLOBALMAMBA_ALLOCATOR_REEXEC', 'tcmalloc')
    with pytest.raises(RuntimeError, match='re-executed under tcmalloc'):
        reexec_under('tcmalloc')


@needs_tcmalloc
def test_reexec_under_tcmalloc_keeps_the_command():
    """``python -c CODE`` restarted under tcmalloc runs CODE again, now served by it, and
    its free memory can be handed back."""
    code = ('import sys; from mmglobalmamba.engine.cpu_allocator import *; '
            'reexec_under("tcmalloc"); print("ran", sys.argv[1:], loaded_allocator(), '
            'release_free_memory())')
    env = allocator_env('glibc')
    out = subprocess.run([sys.executable, '-c', code, 'arg1'], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ran ['arg1'] tcmalloc tcmalloc"


@pytest.mark.parametrize('allocator', [pytest.param('glibc', marks=pytest.mark.slow),
                                       pytest.param('tcmalloc', marks=needs_tcmalloc)])
def test_train_step_row_in_child(allocator):
    from mmglobalmamba.benchmark.train_step import time_train_step_in_child
    row = time_train_step_in_child(dict(embed_dims=32, depth=2), (64, 64), 2, True, 'fp32',
                                   iters=1, warmup=1,
                                   backend='cpu', allocator=allocator, timeout=600)
    assert row.error == '' and row.allocator == allocator and row.with_cp
    assert len(row.losses) == 2 and all(math.isfinite(v) for v in row.losses)
    assert row.ms_per_step > 0 and row.peak_mib >= 0 and row.shape == (64, 64)
