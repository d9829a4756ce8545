"""``causal_conv1d``: depthwise causal 1-D convolution (Mamba's short conv)."""
from .dispatch import causal_conv1d_interface, requested_backend, resolve_backend
from .reference import causal_conv1d_torch

__all__ = ['causal_conv1d']

_CUDA_WIDTHS = (2, 3, 4)  # what the causal-conv1d CUDA kernel supports


def causal_conv1d(x, weight, bias=None, activation=None, backend=None):
    """Depthwise causal conv: ``out[:, d, t] = bias[d] + sum_k weight[d, k] x[:, d, t-w+1+k]``.

    Args:
        x: (batch, dim, L). weight: (dim, width) (or (dim, 1, width)). bias: (dim,) or None.
        activation: None, ``'silu'`` or ``'swish'`` (same thing).
        backend: as for ``selective_scan``. On CPU ('cpu' and 'torch') this is F.conv1d,
            which is already fast; 'cuda' uses the causal-conv1d package.
    Returns (batch, dim, L) in x's dtype.
    """
    if activation not in (None, 'silu', 'swish'):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    if weight.dim() == 3:
        if weight.shape[1] != 1:
            raise ValueError(f'weight must be (dim, width) or (dim, 1, width), got '
                             f'{tuple(weight.shape)}')
        weight = weight.squeeze(1)
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f'x must be (batch, dim, L) and weight (dim, width); got x '
                         f'{tuple(x.shape)}, weight {tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (x.shape[1], ):
        raise ValueError(f'bias must be (dim,), got {tuple(bias.shape)}')
    forced = backend not in (None, '', 'auto') or requested_backend() is not None
    name = resolve_backend(backend, x.device, 'causal_conv1d')
    if name == 'cuda':
        if weight.shape[1] in _CUDA_WIDTHS:
            return causal_conv1d_interface().causal_conv1d_fn(
                x, weight, bias, activation=activation)
        if forced:
            raise ValueError(f'the causal-conv1d CUDA kernel supports widths '
                             f'{_CUDA_WIDTHS}, got {weight.shape[1]}')
    return causal_conv1d_torch(x, weight, bias, activation)
