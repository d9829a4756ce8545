"""Checkpoint loading that never runs code from the file (README: "Checkpoint safety").

torch >= 2.6 loads checkpoints with ``weights_only=True``. mmengine 0.10.7 stores its message
hub (``HistoryBuffer`` objects holding numpy arrays) in every checkpoint it writes, so resume
and test fail under that default. :func:`use_safe_checkpoint_loading` is the one step that
fixes it: it allow-lists exactly those types (instead of turning the protection off) and
routes mmengine's local-file loader through :func:`safe_torch_load`, which refuses anything
else with an error that says what happened. ``import mmglobalmamba`` takes that step.
"""
import argparse
import os.path as osp
import pickle
import re

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_safe_globals():
    """The numpy objects that pickled arrays and scalars are rebuilt from."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.bool_)]
    return [np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


def _history_buffer_method(owner, name):
    """Stands in for ``getattr`` in checkpoints: a pickled ``HistoryBuffer`` stores its
    statistics methods (``HistoryBuffer.min`` ...) as ``getattr(HistoryBuffer, 'min')``.
    Only that lookup is allowed; a general ``getattr`` would reach far more."""
    # the four built-in statistics exist before any HistoryBuffer has registered them
    allowed = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics '
        'methods may be looked up while loading')


SAFE_GLOBALS = [
    HistoryBuffer, *_numpy_safe_globals(),
    argparse.Namespace,  # 'args' of the released classifier checkpoints (a plain record)
    (_history_buffer_method, '__builtin__.getattr'),  # pickle protocol 2 (torch.save)
    (_history_buffer_method, 'builtins.getattr'),
]


def allow_mmengine_checkpoints():
    """Let ``torch.load(weights_only=True)`` read what mmengine writes (no code runs)."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(SAFE_GLOBALS)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds objects that only arbitrary code could rebuild."""


# torch.save writes a zip archive; files of torch < 1.6 are a pickle (protocol 2+: 0x80)
_CHECKPOINT_MAGIC = (b'PK\x03\x04', b'\x80')


def safe_torch_load(filename, map_location='cpu'):
    """``torch.load`` with ``weights_only=True``; a refused file gets a clear error."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint {filename!r} does not exist: check the path in your config '
            '(load_from / init_cfg.checkpoint / --checkpoint).')
    with open(filename, 'rb') as f:
        magic = f.read(4)
    if not magic.startswith(_CHECKPOINT_MAGIC):
        raise RuntimeError(
            f'could not read checkpoint {filename!r}: the file is truncated or not a torch '
            f'checkpoint (it starts with {magic!r}, neither a zip archive nor a pickle). '
            'Download or copy it again.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'WeightsUnpickler error:(.*?)(Check the documentation|$)',
                          str(err), re.S)
        reason = ' '.join(found.group(1).split()) if found and found.group(1).strip() \
            else str(err).splitlines()[0]
        raise UnsafeCheckpointError(
            f'refused to load {filename!r}: it contains Python objects that are not plain '
            f'tensors, numbers or mmengine log buffers, and loading them could execute code '
            f'({reason}). If you trust the file, re-save its state_dict '
            'with torch.save(weights) in a trusted environment; mmglobalmamba never loads '
            'checkpoints with weights_only=False.') from err
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(
            f'could not read checkpoint {filename!r}: the file is truncated or not a torch '
            f'checkpoint ({err}). Download or copy it again.') from err


def _load_from_local(filename, map_location):
    return safe_torch_load(filename, map_location)


def install_safe_local_loader():
    """Route mmengine's local checkpoint loading (resume, load_from, init) through us."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)


def use_safe_checkpoint_loading():
    """Allow-list mmengine's checkpoint contents for ``weights_only=True`` and make every
    local checkpoint mmengine opens go through :func:`safe_torch_load` (idempotent)."""
    allow_mmengine_checkpoints()
    install_safe_local_loader()
