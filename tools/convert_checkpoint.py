"""Convert a released GlobalMamba (or Vim) ImageNet classifier into backbone weights.

The released format keeps the weights under ``'model'`` next to the optimizer state and an
``argparse.Namespace``. The output holds only the backbone's tensors (classifier head dropped,
``pos_embed`` checked against the backbone's pretraining layout), under ``'state_dict'``, ready
for ``init_cfg=dict(type='Pretrained', checkpoint=DST)``. The file is read with
``weights_only=True``: nothing in it is executed.

Examples::

    python tools/convert_checkpoint.py globalmamba_tiny.pth pretrain/globalmamba_tiny.pth --arch tiny
    python tools/convert_checkpoint.py vim_t.pth pretrain/vim_tiny.pth --arch tiny \
        --serialization raster --bimamba
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='released classifier checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the backbone weights')
    parser.add_argument('--arch', default='tiny', help="'tiny' (192) or 'small' (384)")
    parser.add_argument('--img-size', type=int, default=224,
                        help='resolution the classifier was trained at')
    parser.add_argument('--serialization', default='frequency', choices=['frequency', 'raster'],
                        help="'raster' for Vim checkpoints")
    parser.add_argument('--bimamba', action='store_true',
                        help='the checkpoint has Vim backward-scan (*_b) parameters')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmglobalmamba.models import GlobalMamba
    from mmglobalmamba.models.backbones.checkpoint import convert_classifier_checkpoint
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    model = GlobalMamba(arch=args.arch, img_size=args.img_size,
                        serialization=args.serialization, bimamba=args.bimamba)
    report = convert_classifier_checkpoint(args.src, args.dst, model)
    print(f'wrote {args.dst}: kept {len(report["kept"])} tensors')
    for what in ('resized', 'dropped', 'unexpected', 'missing'):
        if report[what]:
            print(f'  {what} ({len(report[what])}): {", ".join(report[what])}')
    if report['unexpected'] or report['missing']:
        print('warning: the checkpoint and the backbone do not match exactly; check --arch, '
              '--serialization and --bimamba', file=sys.stderr)
    return report


if __name__ == '__main__':
    main()
