"""Training-side pieces: optimizer constructors and wrappers (registered on import),
mixed precision, process-group teardown."""
from .amp import CPUAutocastOptimWrapper, enable_amp
from .optimizers import GlobalMambaLayerDecayOptimizerConstructor
from .process_group import release_process_group

__all__ = ['CPUAutocastOptimWrapper', 'GlobalMambaLayerDecayOptimizerConstructor',
           'enable_amp', 'release_process_group']
