from .global_mamba import GlobalMamba

__all__ = ['GlobalMamba']
