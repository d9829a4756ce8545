"""Optimizer-wrapper constructors."""
from .layer_decay_optim_constructor import GlobalMambaLayerDecayOptimizerConstructor

__all__ = ['GlobalMambaLayerDecayOptimizerConstructor']
