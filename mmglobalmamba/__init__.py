"""mmglobalmamba: GlobalMamba backbones for mmsegmentation and mmdetection.

``mmglobalmamba.ops`` (the selective scan and its kernels) needs torch alone. The rest needs
the OpenMMLab stack; when mmengine is installed, importing the package

* registers the models, optimizer constructors and wrappers (what
  ``custom_imports=dict(imports=['mmglobalmamba'])`` in a config relies on), and
* turns on safe checkpoint loading (:func:`~mmglobalmamba.checkpoint_safety.use_safe_checkpoint_loading`;
  README, "Checkpoint safety").

It never imports mamba_ssm or causal_conv1d here: the CUDA kernels are looked up lazily on
first use. Where torch cannot be imported, only ``mmglobalmamba.deploy.runtime`` (the
ONNX Runtime runner) is usable, and importing the package loads nothing else.
"""
import importlib.util

from .version import __version__

try:
    from . import ops  # noqa: F401
except ImportError as err:  # no torch: only the torch-free mmglobalmamba.deploy.runtime works
    if (err.name or '').split('.')[0] != 'torch':
        raise
    _HAS_TORCH = False
else:
    _HAS_TORCH = True

if _HAS_TORCH and importlib.util.find_spec('mmengine') is not None:
    from .checkpoint_safety import use_safe_checkpoint_loading

    use_safe_checkpoint_loading()
    from . import models  # noqa: F401,E402
    from . import engine  # noqa: F401,E402

__all__ = ['__version__']
