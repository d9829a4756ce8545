"""mmglobalmamba: GlobalMamba backbones for mmsegmentation and mmdetection.

Importing the package registers its modules (``custom_imports=dict(imports=['mmglobalmamba'])``
in a config). It never imports mamba_ssm or causal_conv1d here: the CUDA kernels are looked
up lazily on first use.
"""
from .version import __version__
from . import compat  # noqa: F401  (torch>=2.6 checkpoint loading for mmengine files)
from . import ops  # noqa: F401
from . import models  # noqa: F401
from . import engine  # noqa: F401

__all__ = ['__version__']
