"""Where mmglobalmamba registers its modules.

Everything is registered in mmengine's root registries. mmseg's and mmdet's registries are
children of those roots and fall back to their parent when a name is not their own, so a
config in either scope finds ``GlobalMamba`` without this package importing mmseg or mmdet.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS

MODELS = MMENGINE_MODELS
OPTIM_WRAPPER_CONSTRUCTORS = MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
HOOKS = MMENGINE_HOOKS
OPTIM_WRAPPERS = MMENGINE_OPTIM_WRAPPERS

__all__ = ['MODELS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIM_WRAPPERS', 'HOOKS']
