"""Mixed-precision training: mmengine's ``AmpOptimWrapper`` on CUDA, bf16 autocast on CPU.

mmengine 0.10.7's ``AmpOptimWrapper`` refuses to run without CUDA/NPU/MLU/MUSA, so on CPU
``CPUAutocastOptimWrapper`` runs the forward and the loss under
``torch.autocast('cpu', dtype=torch.bfloat16)`` (bf16 has fp32's exponent range, so no loss
scaling is needed). Inside the backbone the serializer's DCT and the selective scan compute
in fp32 whatever the autocast dtype; the residual stream and RMSNorm stay fp32 too.

mmcv 2.1.0's CPU NMS and RoIAlign accept float32 only, so a Mask R-CNN train step under CPU
autocast fails inside mmcv ("expected scalar type Float but found BFloat16"): CPU mixed
precision is for the backbone and segmentors; detectors train in fp32 on CPU.
"""
import contextlib
import logging

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from mmglobalmamba.registry import OPTIM_WRAPPERS

__all__ = ['CPUAutocastOptimWrapper', 'enable_amp', 'AMP_DTYPES']

AMP_DTYPES = ('float16', 'bfloat16')


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward context is CPU bf16 autocast.

    Args:
        dtype (str): autocast dtype; only ``'bfloat16'`` (CPU autocast has no fp16 path
            worth training with, and bf16 needs no loss scaling).
    """

    def __init__(self, dtype='bfloat16', **kwargs):
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f'CPUAutocastOptimWrapper supports dtype bfloat16 only, got '
                             f'{dtype!r}; fp16 mixed precision needs a CUDA GPU')
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def enable_amp(cfg, dtype=None, device=None):
    """Switch ``cfg.optim_wrapper`` to mixed precision, in place.

    CUDA: mmengine's ``AmpOptimWrapper`` (dtype ``float16`` by default, with dynamic loss
    scaling; ``bfloat16`` on GPUs that have it). CPU: :class:`CPUAutocastOptimWrapper`
    (``bfloat16``). ``device`` defaults to CUDA when torch sees a GPU.
    """
    if dtype is not None and dtype not in AMP_DTYPES:
        raise ValueError(f'AMP dtype must be one of {AMP_DTYPES}, got {dtype!r}')
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in ('AmpOptimWrapper', 'CPUAutocastOptimWrapper'):
        print_log(f'mixed precision is already enabled in the config ({wrapper})',
                  logger='current', level=logging.WARNING)
        return cfg
    if wrapper != 'OptimWrapper':
        raise ValueError(f'mixed precision needs optim_wrapper.type OptimWrapper, got '
                         f'{wrapper}')
    if device == 'cuda':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.dtype = dtype or 'float16'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        if dtype == 'float16':
            raise ValueError('fp16 mixed precision needs a CUDA GPU; on CPU use '
                             '--amp-dtype bfloat16 (the default there)')
        cfg.optim_wrapper.type = 'CPUAutocastOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'
    return cfg
