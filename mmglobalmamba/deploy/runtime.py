"""Run an exported GlobalMamba ONNX file with onnxruntime and numpy alone (no torch, no mmseg).

The file carries what a deployment needs in its ``metadata_props`` (written by
``mmglobalmamba.deploy.export``): what it is (segmentor or backbone), the static input shape,
the normalization (mean, std, channel order) and the class names::

    from mmglobalmamba.deploy import OnnxSegmentor
    seg = OnnxSegmentor('upernet.onnx')
    labels = seg.predict(rgb_image)        # (H, W) uint8/any RGB -> (H, W) int64 class ids
    seg.classes[labels[0, 0]]

``predict`` resizes the image to the exported shape (bilinear), normalizes it, runs the
model, resizes the logits back to the image size (bilinear, as mmseg does) and takes the
argmax. This module must never import torch (tested in a process where torch cannot load).
"""
import json
import os
import tempfile

import numpy as np

__all__ = ['INSTALL_HINT', 'METADATA_PREFIX', 'import_onnxruntime', 'read_metadata',
           'bilinear_matrix', 'resize_bilinear', 'normalize_image', 'OnnxModel',
           'OnnxSegmentor']

METADATA_PREFIX = 'mmglobalmamba.'
INSTALL_HINT = ('onnxruntime is not installed; install the deploy extra: '
                '`pip install -e .[deploy]` (from the mmglobalmamba source tree) or '
                '`pip install -r requirements/deploy.txt`')


def import_onnxruntime():
    """The onnxruntime module, or an ImportError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f'{INSTALL_HINT} ({err})') from err
    return onnxruntime


def read_metadata(props):
    """Our entries of a ``metadata_props`` mapping, prefix dropped, JSON values decoded."""
    out = {}
    for key, value in props.items():
        if key.startswith(METADATA_PREFIX):
            out[key[len(METADATA_PREFIX):]] = json.loads(value)
    return out


def bilinear_matrix(n_in, n_out):
    """(n_out, n_in) float32 weights of a bilinear resize along one axis with half-pixel
    centers (``align_corners=False``, no antialias, edges clamped)."""
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights.astype(np.float32)


def resize_bilinear(array, size):
    """Resize the last two axes of ``array`` (..., H, W) to ``size`` (h, w), bilinearly."""
    H, W = array.shape[-2:]
    h, w = size
    if (H, W) == (h, w):
        return np.asarray(array, dtype=np.float32)
    rows, cols = bilinear_matrix(H, h), bilinear_matrix(W, w)   # (h, H), (w, W)
    return rows @ np.asarray(array, dtype=np.float32) @ cols.T  # (..., h, w)


def normalize_image(image, size, mean, std, rgb_input, channel_order='rgb'):
    """One (H, W, 3) image -> (3, h, w) float32: channels in the model's order, resized to
    ``size`` (bilinear), then ``(x - mean) / std`` per channel."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) image, got shape {image.shape}')
    if channel_order not in ('rgb', 'bgr'):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if (channel_order == 'rgb') != bool(rgb_input):
        image = image[..., ::-1]
    chw = resize_bilinear(image.transpose(2, 0, 1).astype(np.float32), size)  # (3, h, w)
    mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (chw - mean) / std


class OnnxModel:
    """An exported file in an onnxruntime CPU session: ``run(inputs) -> [outputs]``.

    Args:
        path (str): the ``.onnx`` file.
        threads (int | None): intra-op threads (None: onnxruntime's default).
        profile (bool): record an onnxruntime profile (``end_profiling()`` returns its file).
    """

    def __init__(self, path, threads=None, profile=False):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if profile:  # its trace goes to the temp folder, not the working directory
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tempfile.gettempdir(),
                                                       'mmglobalmamba_ort_profile')
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        self.metadata = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape)                # (batch, 3, H, W), static
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.kind = self.metadata.get('kind', 'unknown')

    def run(self, inputs):
        """inputs (batch, 3, H, W) float32, already normalized -> list of output arrays."""
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if tuple(inputs.shape) != self.input_shape:
            raise ValueError(f'{self.path} takes inputs of shape {self.input_shape} (static: '
                             f'exported so), got {tuple(inputs.shape)}')
        return self.session.run(None, {self.input_name: inputs})

    def end_profiling(self):
        return self.session.end_profiling()


class OnnxSegmentor(OnnxModel):
    """An exported segmentor: raw ``logits(inputs)`` and ``predict(image) -> label map``.

    The normalization and class names come from the file (the config's data preprocessor
    and dataset at export time).
    """

    def __init__(self, path, threads=None, profile=False):
        super().__init__(path, threads, profile)
        if self.kind != 'segmentor':
            raise ValueError(f'{path} holds a {self.kind!r} export, not a segmentor; use '
                             'OnnxModel for backbone exports')
        meta = self.metadata
        self.mean, self.std = meta['mean'], meta['std']
        self.rgb_input = bool(meta['bgr_to_rgb'])    # the model's input channels are RGB
        self.classes = meta.get('classes')
        self.batch, _, self.height, self.width = self.input_shape

    def preprocess(self, image, channel_order='rgb'):
        """One (H, W, 3) image -> (3, h, w) float32 at the exported size, normalized."""
        return normalize_image(image, (self.height, self.width), self.mean, self.std,
                               self.rgb_input, channel_order)

    def logits(self, inputs):
        """Normalized inputs (batch, 3, h, w) -> logits (batch, classes, h / 4, w / 4)."""
        return self.run(inputs)[0]

    def predict(self, images, channel_order='rgb'):
        """An (H, W, 3) image, or a list of exactly ``batch`` of them -> (H, W) int64 class
        ids per image (a list for a list)."""
        single = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if single else list(images)
        if len(batch) != self.batch:
            raise ValueError(f'{self.path} was exported for batch {self.batch}: pass '
                             f'{"a list of " if self.batch > 1 else ""}{self.batch} '
                             f'image(s), got {len(batch)}')
        inputs = np.stack([self.preprocess(im, channel_order) for im in batch])
        logits = self.logits(inputs)                               # (batch, C, h/4, w/4)
        maps = [resize_bilinear(lg, np.asarray(im).shape[:2]).argmax(0)
                for lg, im in zip(logits, batch)]
        return maps[0] if single else maps
