"""Figures that explain the model (matplotlib is imported only when a figure is drawn)."""
from .serialization import (SerializationPlot, load_image, make_example_image,
                            plot_serialization, scan_layout)

__all__ = ['SerializationPlot', 'load_image', 'make_example_image', 'plot_serialization',
           'scan_layout']
