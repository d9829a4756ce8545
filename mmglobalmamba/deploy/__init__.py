"""Deploy: ONNX export of GlobalMamba segmentors and backbones, and a torch-free runtime.

* :mod:`.onnx_scan` the selective scan as a Scan graph of standard ONNX ops (onnx only),
* :mod:`.scan_op` the torch placeholder op the exporter keeps as one node,
* :mod:`.export` config -> model -> ``.onnx`` file with metadata (torch, mmseg),
* :mod:`.runtime` :class:`OnnxSegmentor` / :class:`OnnxModel`: numpy + onnxruntime only,
* :mod:`.verify` ONNX Runtime (in a torch-free process) against PyTorch,
* :mod:`.benchmark` PyTorch vs ORT latency and the ORT profile by op type.

Nothing is imported eagerly, so ``from mmglobalmamba.deploy import OnnxSegmentor`` works
where torch is not installed. See docs/deploy.md.
"""
import importlib

_LAZY = {
    'OnnxModel': 'runtime', 'OnnxSegmentor': 'runtime', 'export_config': 'export',
    'ExportError': 'export', 'benchmark_exports': 'benchmark',
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
