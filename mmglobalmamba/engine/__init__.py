"""Training-side pieces: optimizer constructors (registered on import)."""
from .optimizers import GlobalMambaLayerDecayOptimizerConstructor

__all__ = ['GlobalMambaLayerDecayOptimizerConstructor']
