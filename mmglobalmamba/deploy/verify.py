"""``--verify``: ONNX Runtime, in a fresh process that never imports torch, against PyTorch
on the same preprocessed input (the comparison itself is in :mod:`.ort_child`)."""
import json
import os.path as osp
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from .runtime import normalize_image

__all__ = ['VerifyResult', 'verify', 'image_batch']

CHILD = osp.join(osp.dirname(osp.abspath(__file__)), 'ort_child.py')


@dataclass
class VerifyResult:
    returncode: int     # 0 within tolerance, 1 over it, other: the child failed
    report: dict        # ort_child's JSON (per output: relative difference, agreement)
    text: str           # what the child printed


def image_batch(image, batch, size, metadata):
    """An (H, W, 3) RGB image -> (batch, 3, h, w) normalized model inputs; odd batch
    entries are the mirrored image, so that mixing up batch entries would show."""
    item = normalize_image(image, size, metadata['mean'], metadata['std'],
                           metadata['bgr_to_rgb'], channel_order='rgb')
    return np.stack([item if i % 2 == 0 else item[..., ::-1] for i in range(batch)])


def verify(module, path, inputs, tolerance=1e-4, threads=None):
    """Run ``module`` (PyTorch) and the file ``path`` (ORT, torch-free child process) on
    ``inputs`` (batch, 3, H, W) float32 and compare. Returns a :class:`VerifyResult`."""
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    with torch.no_grad():
        refs = module(torch.from_numpy(inputs))
    refs = refs if isinstance(refs, tuple) else (refs, )
    with tempfile.TemporaryDirectory(prefix='mmglobalmamba_verify_') as tmp:
        data, out = osp.join(tmp, 'io.npz'), osp.join(tmp, 'result.json')
        np.savez(data, inputs=inputs, **{f'ref_{i}': r.numpy() for i, r in enumerate(refs)})
        cmd = [sys.executable, CHILD, 'verify', '--model', path, '--data', data, '--out', out,
               '--tolerance', str(tolerance)]
        if threads:
            cmd += ['--threads', str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if not osp.exists(out):
            raise RuntimeError(f'the ONNX Runtime check failed (exit {proc.returncode}):\n'
                               f'{proc.stdout}{proc.stderr}')
        with open(out) as f:
            report = json.load(f)
    return VerifyResult(proc.returncode, report, proc.stdout)
