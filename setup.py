"""Install mmglobalmamba.

The CPU selective-scan kernel (``mmglobalmamba/ops/csrc``) is compiled here as the
extension ``mmglobalmamba._C``. Set ``MMGLOBALMAMBA_NO_CPU_KERNEL=1`` to skip it; a failed
build only warns, and the package then runs on the plain PyTorch scan.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    scope = {}
    with open(os.path.join(HERE, 'mmglobalmamba', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name):
    path = os.path.join(HERE, 'requirements', name)
    with open(path) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


def cpu_kernel_extension():
    """The C++ scan kernel, or ``({}, [])`` when disabled or torch is missing."""
    if os.environ.get('MMGLOBALMAMBA_NO_CPU_KERNEL', '0') == '1':
        print('mmglobalmamba: MMGLOBALMAMBA_NO_CPU_KERNEL=1, not building the CPU kernel')
        return {}, []
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print('mmglobalmamba: torch is not importable at build time (use '
              '--no-build-isolation); the CPU kernel is not built')
        return {}, []

    class TolerantBuildExtension(BuildExtension):
        """Build the kernel, but never fail the install because of it."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - any compiler failure
                print(f'mmglobalmamba: WARNING: the CPU kernel failed to build ({err}); '
                      'the package will use the PyTorch scan', file=sys.stderr)

    sources = sorted(glob.glob(os.path.join('mmglobalmamba', 'ops', 'csrc', '*.cpp')))
    if not sources:
        return {}, []
    flags = ['-O3', '-fopenmp', '-std=c++17', '-ffp-contract=fast']
    flags += os.environ.get('MMGLOBALMAMBA_CPU_FLAGS', '').split()
    headers = sorted(glob.glob(os.path.join('mmglobalmamba', 'ops', 'csrc', '*.h')))
    ext = CppExtension(
        'mmglobalmamba._C', sources, depends=headers,
        extra_compile_args=flags, extra_link_args=['-fopenmp'])
    return {'build_ext': TolerantBuildExtension.with_options(use_ninja=False)}, [ext]


cmdclass, ext_modules = cpu_kernel_extension()

setup(
    name='mmglobalmamba',
    version=read_version(),
    description='GlobalMamba (frequency-ordered Vision Mamba) backbones for '
                'mmsegmentation and mmdetection',
    long_description=open(os.path.join(HERE, 'README.md')).read()
    if os.path.exists(os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tools', 'configs')),
    license='Apache-2.0',
    python_requires='>=3.9',
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'tests': read_requirements('tests.txt'),
        'cuda': read_requirements('cuda.txt'),
        'deploy': read_requirements('deploy.txt'),
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
