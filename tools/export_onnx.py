"""Export a GlobalMamba segmentor (or backbone) to ONNX, run by ONNX Runtime alone.

The segmentor is exported in tensor mode: normalized image (batch, 3, H, W) in, class
logits at 1/4 of the input resolution out. ``--backbone-only`` exports the backbone (image
in, the out_indices feature maps out); it is the only export of detector configs. Shapes
are static. See docs/deploy.md.

    python tools/export_onnx.py configs/upernet_globalmamba_ade20k.py --shape 512 512 \
        --out work_dirs/upernet.onnx --checkpoint CKPT --verify photo.jpg --benchmark
    python tools/export_onnx.py configs/mask-rcnn_globalmamba_fpn_1x_coco.py \
        --shape 800 1344 --out work_dirs/backbone.onnx --backbone-only
"""
import argparse
import os.path as osp
import sys
import warnings

# OpenMMLab / setuptools deprecation chatter; our own warnings stay visible
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', category=UserWarning, module=r'(mmseg|mmdet|mmengine|mmcv)\.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmseg (or, with --backbone-only, mmdet) config')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='static input size of the file')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--checkpoint', help='trained weights (without: random init)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export the backbone alone (image -> feature maps)')
    parser.add_argument('--batch', type=int, default=1, help='static batch size (1)')
    parser.add_argument('--verify', metavar='IMAGE',
                        help='compare ORT (torch-free process) with PyTorch on this image')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='--verify fails above this max diff / max |output| (1e-4)')
    parser.add_argument('--benchmark', action='store_true',
                        help='time PyTorch vs ORT (segmentor and backbone), ORT profile')
    parser.add_argument('--threads', type=int, default=2, help='threads of both (2)')
    parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds (5)')
    parser.add_argument('--scan-steps', type=int, default=None,
                        help='time steps per Scan iteration (default: the measured best)')
    parser.add_argument('--markdown', action='store_true', help='print markdown tables')
    return parser.parse_args(argv)


def describe_export(result):
    outs = ', '.join(f'{name} {shape}' for name, shape in result.output_shapes.items())
    return (f'exported {result.kind} {result.input_shape} -> {outs} to {result.path} in '
            f'{result.seconds:.1f} s: {result.nodes} nodes ({result.nodes_total} with the '
            f'{result.scans} Scan bodies), {result.bytes / 2 ** 20:.1f} MiB')


def main(argv=None):
    args = parse_args(argv)
    from mmglobalmamba.deploy.runtime import import_onnxruntime
    try:
        import_onnxruntime()
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        sys.exit(f'error: {err}')
    from mmglobalmamba.deploy.export import ExportError, export_config, load_config
    from mmglobalmamba.deploy.onnx_scan import DEFAULT_STEPS
    steps = args.scan_steps or DEFAULT_STEPS
    try:
        cfg = load_config(args.config)
        result, module = export_config(args.config, args.shape, args.out, args.checkpoint,
                                       args.backbone_only, args.batch, steps=steps, cfg=cfg)
    except (ExportError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(describe_export(result))
    if args.checkpoint is None:
        print('note: no --checkpoint, so the weights are random (fine for timing and checks)')

    status = 0
    if args.verify:
        import mmcv

        from mmglobalmamba.deploy.runtime import read_metadata
        from mmglobalmamba.deploy.verify import image_batch, verify
        import onnx
        metadata = read_metadata({p.key: p.value for p in
                                  onnx.load(args.out, load_external_data=False).metadata_props})
        image = mmcv.imread(args.verify, channel_order='rgb')
        inputs = image_batch(image, args.batch, args.shape, metadata)
        checked = verify(module, args.out, inputs, tolerance=args.tolerance,
                         threads=args.threads)
        print(f'verify on {args.verify} ({image.shape[1]}x{image.shape[0]} resized to '
              f'{args.shape[1]}x{args.shape[0]}), ORT in a process without torch:')
        print(checked.text.rstrip())
        status = checked.returncode

    if args.benchmark:
        from mmglobalmamba.deploy.benchmark import benchmark_exports
        from mmglobalmamba.deploy.export import example_inputs
        entries = [(result.kind, module, result)]
        if result.kind == 'segmentor':
            path = osp.splitext(args.out)[0] + '.backbone.onnx'
            backbone, backbone_module = export_config(args.config, args.shape, path,
                                                      args.checkpoint, True, args.batch,
                                                      steps=steps, cfg=cfg)
            print(describe_export(backbone))
            entries.append(('backbone', backbone_module, backbone))
        report = benchmark_exports(entries, example_inputs(args.batch, *args.shape),
                                   threads=args.threads, rounds=args.rounds)
        print(f'\nbenchmark of {osp.basename(args.config)}, batch {args.batch}:')
        print(report.describe(markdown=args.markdown))
    return status


if __name__ == '__main__':
    sys.exit(main())
