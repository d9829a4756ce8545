"""The ONNX Runtime side of ``--verify`` and ``--benchmark``, run as a script in a fresh
process that cannot import torch: files run by onnxruntime and numpy alone, as a
deployment runs them, and without sharing threads or heap with PyTorch.

``python ort_child.py verify --model FILE --data NPZ --out JSON [--tolerance T]`` reads
the preprocessed inputs and PyTorch's outputs from NPZ (``inputs``, ``ref_0``, ...), runs
the file, prints per output the max absolute difference relative to the output's max
magnitude and, for a segmentor, the share of pixels whose argmax class agrees (logits
resized to the input size as in prediction); writes the same to JSON; exits 1 when a
relative difference is over the tolerance.

``python ort_child.py serve --model FILE [--model FILE ...] --data NPZ`` loads the files,
then runs file ``i`` on ``inputs`` for each line ``run i`` on stdin (answering ``done``),
and for ``profile i`` prints its profile by op type as one JSON line.
"""
import argparse
import json
import os.path as osp
import sys

__all__ = ['block_torch', 'compare_outputs', 'serve', 'main']


class _TorchBlocker:
    """A meta-path finder that refuses torch (and its submodules)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ImportError(f'{name} is blocked: this process runs ONNX Runtime alone',
                              name=name)
        return None


def block_torch():
    """From now on importing torch raises ImportError in this process."""
    if 'torch' in sys.modules:
        raise RuntimeError('torch is already imported; the check needs a fresh process')
    sys.meta_path.insert(0, _TorchBlocker())


def compare_outputs(outputs, references, kind):
    """Per output: max |ort - ref| / max |ref|; for a segmentor also the argmax agreement
    of the logits resized to the input size ``(H, W)`` taken from kind[1]."""
    import numpy as np
    kind, size = kind
    rows = []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        if out.shape != ref.shape:
            raise ValueError(f'output {i}: ONNX shape {out.shape} vs PyTorch {ref.shape}')
        scale = float(np.abs(ref).max())
        diff = float(np.abs(out.astype(np.float64) - ref).max())
        row = dict(index=i, shape=list(out.shape), max_abs_diff=diff, max_abs_ref=scale,
                   relative=diff / scale if scale else diff)
        if kind == 'segmentor':
            from mmglobalmamba.deploy.runtime import resize_bilinear
            labels_ort = resize_bilinear(out, size).argmax(1)   # (batch, H, W)
            labels_ref = resize_bilinear(ref, size).argmax(1)
            row['argmax_agreement'] = float((labels_ort == labels_ref).mean())
            row['pixels'] = int(labels_ref.size)
        rows.append(row)
    return rows


def serve(args):
    """Answer ``run i`` / ``profile i`` lines on stdin until it closes."""
    import dataclasses

    import numpy as np
    from mmglobalmamba.deploy.profile import profile_by_op_type
    from mmglobalmamba.deploy.runtime import OnnxModel
    inputs = np.load(args.data)['inputs']
    models = [OnnxModel(path, threads=args.threads) for path in args.model]
    print('ready', flush=True)
    for line in sys.stdin:
        command, index = line.split()
        index = int(index)
        if command == 'run':
            models[index].run(inputs)
            print('done', flush=True)
        elif command == 'profile':
            rows, run_ms = profile_by_op_type(args.model[index], inputs, args.threads)
            print(json.dumps(dict(rows=[dataclasses.asdict(r) for r in rows],
                                  run_ms=run_ms)), flush=True)
        else:
            raise ValueError(f'unknown command {line!r}')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('command', choices=['verify', 'serve'])
    parser.add_argument('--model', required=True, action='append')
    parser.add_argument('--data', required=True)
    parser.add_argument('--out')
    parser.add_argument('--tolerance', type=float, default=1e-4)
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == 'serve':
        return serve(args)
    args.model = args.model[0]
    import numpy as np
    from mmglobalmamba.deploy.runtime import OnnxModel
    model = OnnxModel(args.model, threads=args.threads)
    data = np.load(args.data)
    inputs = data['inputs']
    references = [data[f'ref_{i}'] for i in range(len(model.output_names))]
    outputs = model.run(inputs)
    rows = compare_outputs(outputs, references, (model.kind, inputs.shape[-2:]))
    worst = max(r['relative'] for r in rows)
    for name, r in zip(model.output_names, rows):
        line = (f'verify {name} {tuple(r["shape"])}: max |ORT - PyTorch| = '
                f'{r["max_abs_diff"]:.3e}, {r["relative"]:.3e} of max |PyTorch| '
                f'{r["max_abs_ref"]:.3e}')
        if 'argmax_agreement' in r:
            line += (f'; argmax agrees on {100 * r["argmax_agreement"]:.4f}% of '
                     f'{r["pixels"]} pixels')
        print(line)
    result = dict(outputs=rows, worst_relative=worst, tolerance=args.tolerance,
                  within_tolerance=worst <= args.tolerance,
                  torch_imported='torch' in sys.modules,
                  onnxruntime=sys.modules['onnxruntime'].__version__)
    print(f'verify: worst relative difference {worst:.3e} (tolerance {args.tolerance:.1e}); '
          f'onnxruntime {result["onnxruntime"]}, torch imported: {result["torch_imported"]}')
    with open(args.out, 'w') as f:
        json.dump(result, f)
    return 0 if result['within_tolerance'] else 1


if __name__ == '__main__':
    # Run as a script: sys.path[0] is this folder; the package root goes there instead.
    sys.path[0] = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    block_torch()
    sys.exit(main())
