"""Parameters and FLOPs of GlobalMamba backbones and of full models built from configs.

One multiply-add = 1 FLOP (mmengine's convention); the selective scan and the DCT of the
frequency serializer are counted (see ``mmglobalmamba/analysis/complexity.py``), other
element-wise ops are not. Batch 1, random weights, eval mode.

    python tools/get_flops.py --arch tiny --shape 512 512
    python tools/get_flops.py --arch tiny small --shape 512 512 --shape 800 1344 --markdown
    python tools/get_flops.py configs/upernet_globalmamba_ade20k.py --shape 512 512
    python tools/get_flops.py configs/mask-rcnn_globalmamba_fpn_1x_coco.py --shape 800 1344 \
        --show-table
"""
import argparse
import sys
import warnings

# OpenMMLab / setuptools deprecation chatter; our own warnings stay visible
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', category=UserWarning, module=r'(mmseg|mmdet|mmengine|mmcv)\.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='mmseg / mmdet config files')
    parser.add_argument('--arch', nargs='+', default=[],
                        help='backbone presets to analyse alone (tiny, small)')
    parser.add_argument('--shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='input size; repeat for several (default 512 512)')
    parser.add_argument('--backend', choices=['cpu', 'torch'], default=None,
                        help='scan backend of the traced forward (default: cpu if built)')
    parser.add_argument('--markdown', action='store_true', help='print markdown tables')
    parser.add_argument('--show-table', action='store_true',
                        help="also print mmengine's per-module table")
    parser.add_argument('--max-depth', type=int, default=3, help='depth of --show-table')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='key=value overrides of the config (mmengine syntax)')
    args = parser.parse_args(argv)
    if not args.configs and not args.arch:
        parser.error('give at least one CONFIG or --arch')
    args.shape = [tuple(s) for s in (args.shape or [(512, 512)])]
    return args


def _cfg_options(pairs):
    from mmengine.config import DictAction
    if not pairs:
        return None
    ns = argparse.Namespace()
    DictAction(option_strings=[], dest='opts')(None, ns, pairs)
    return ns.opts


def main(argv=None):
    from mmglobalmamba.analysis.complexity_report import (backbone_complexity,
                                                          config_complexity, print_complexity,
                                                          print_complexity_markdown)
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    arch_rows, cfg_rows = [], []
    jobs = [('arch', a, s) for a in args.arch for s in args.shape]
    jobs += [('cfg', c, s) for c in args.configs for s in args.shape]
    for kind, what, shape in jobs:
        if kind == 'arch':
            res = backbone_complexity(what, shape, args.backend)
            arch_rows.append(res)
        else:
            res = config_complexity(what, shape, args.backend, _cfg_options(args.cfg_options))
            cfg_rows.append(res)
        print_complexity(res, args.show_table, args.max_depth)
    if args.markdown:
        print_complexity_markdown(arch_rows, cfg_rows, 'python tools/get_flops.py ' + ' '.join(argv))


if __name__ == '__main__':
    main()
