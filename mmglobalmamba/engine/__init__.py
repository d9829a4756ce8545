"""Training-side pieces: optimizer constructors (registered on import), process-group teardown."""
from .optimizers import GlobalMambaLayerDecayOptimizerConstructor
from .process_group import release_process_group

__all__ = ['GlobalMambaLayerDecayOptimizerConstructor', 'release_process_group']
