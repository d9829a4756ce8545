from . import backbones, layers  # noqa: F401
from .backbones import GlobalMamba

__all__ = ['GlobalMamba']
