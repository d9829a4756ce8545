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
import os
import sys
import warnings
import time

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


def _backbone_name(by_module):
    for name in ('model.backbone', 'backbone', ''):
        if name in by_module:
            return name
    return ''


def analyse_arch(arch, shape, backend):
    import torch

    from mmglobalmamba.analysis import (analyze_complexity, build_backbone,
                                        classifier_param_count)
    model = build_backbone(arch)
    res = analyze_complexity(model, (torch.randn(1, 3, *shape), ), backend=backend)
    mo = res['analyzer'].by_module_and_operator()
    res.update(
        name=f'GlobalMamba-{arch}', shape=shape,
        pyramid_params=res['params_by_module'].get('pyramid', 0),
        pyramid_flops=res['flops_by_module'].get('pyramid', 0),
        scan_flops=res['flops_by_operator'].get('selective_scan', 0),
        dct_flops=mo.get('', {}).get('matmul', 0),
        classifier_params=classifier_param_count(model))
    return res


def analyse_config(path, shape, backend, cfg_options):
    from mmglobalmamba.analysis import (analyze_complexity, build_model_from_config,
                                        model_inputs)
    model, task = build_model_from_config(path, cfg_options)
    module, inputs = model_inputs(model, task, shape)
    res = analyze_complexity(module, inputs, backend=backend)
    bb = 'model.backbone'
    res.update(name=os.path.splitext(os.path.basename(path))[0], shape=shape, task=task,
               backbone_params=res['params_by_module'].get(bb, 0),
               backbone_flops=res['flops_by_module'].get(bb, 0),
               infer_params=res['params'] - res['params_by_module'].get(
                   'model.auxiliary_head', 0),
               scan_flops=res['flops_by_operator'].get('selective_scan', 0))
    return res


def _fmt_shape(shape):
    return f'{shape[0]}x{shape[1]}'


def print_plain(res, args):
    from mmglobalmamba.analysis import format_count as fc
    print(f"\n== {res['name']} @ {_fmt_shape(res['shape'])} "
          f"({res['seconds']:.1f} s to trace)")
    print(f"params {fc(res['params'])} ({res['params']:,}), "
          f"FLOPs {fc(res['flops'], 'G')} ({res['flops']:,})")
    if 'classifier_params' in res:
        print(f"  feature pyramid: params {fc(res['pyramid_params'])}, "
              f"FLOPs {fc(res['pyramid_flops'], 'G')}")
        print(f"  selective scan {fc(res['scan_flops'], 'G')}, DCT {fc(res['dct_flops'], 'G')}")
        print(f"  as the released classifier (224x224, 1000-class head, no pyramid): "
              f"{fc(res['classifier_params'])} params")
    else:
        print(f"  without the auxiliary head (inference): params {fc(res['infer_params'])}")
        print(f"  backbone: params {fc(res['backbone_params'])}, FLOPs "
              f"{fc(res['backbone_flops'], 'G')} (selective scan {fc(res['scan_flops'], 'G')})")
    ops = ', '.join(f'{k} {fc(v, "G")}' for k, v in res['flops_by_operator'].most_common())
    print(f'  by operator: {ops}')
    skipped = sorted(k.split('::')[-1] for k in res['skipped_ops'])
    print(f'  not counted (no FLOP handle): {", ".join(skipped) or "-"}')
    if args.show_table:
        from mmengine.analysis.print_helper import complexity_stats_table
        print(complexity_stats_table(res['analyzer'], max_depth=args.max_depth,
                                     show_param_shapes=False))


def print_markdown(arch_rows, cfg_rows, argv):
    from mmglobalmamba.analysis import format_count as fc
    cmd = 'python tools/get_flops.py ' + ' '.join(argv)
    print(f'\nCommand: `{cmd}`  (1 FLOP = 1 multiply-add, batch 1)\n')
    if arch_rows:
        print('| backbone | input | params | FLOPs | of which scan | of which DCT | '
              'pyramid params / FLOPs | classifier params (224, 1k head) |')
        print('|---|---|---|---|---|---|---|---|')
        for r in arch_rows:
            print(f"| {r['name']} | {_fmt_shape(r['shape'])} | {fc(r['params'])} | "
                  f"{fc(r['flops'], 'G')} | {fc(r['scan_flops'], 'G')} | "
                  f"{fc(r['dct_flops'], 'G')} | {fc(r['pyramid_params'])} / "
                  f"{fc(r['pyramid_flops'], 'G')} | {fc(r['classifier_params'])} |")
    if cfg_rows:
        print('\n| model (config) | input | params (all / inference) | FLOPs | '
              'backbone params | backbone FLOPs | of which scan |')
        print('|---|---|---|---|---|---|---|')
        for r in cfg_rows:
            print(f"| {r['name']} | {_fmt_shape(r['shape'])} | {fc(r['params'])} / "
                  f"{fc(r['infer_params'])} | {fc(r['flops'], 'G')} | "
                  f"{fc(r['backbone_params'])} | {fc(r['backbone_flops'], 'G')} | "
                  f"{fc(r['scan_flops'], 'G')} |")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    arch_rows, cfg_rows = [], []
    jobs = [('arch', a, s) for a in args.arch for s in args.shape]
    jobs += [('cfg', c, s) for c in args.configs for s in args.shape]
    for kind, what, shape in jobs:
        start = time.perf_counter()
        if kind == 'arch':
            res = analyse_arch(what, shape, args.backend)
            arch_rows.append(res)
        else:
            res = analyse_config(what, shape, args.backend, _cfg_options(args.cfg_options))
            cfg_rows.append(res)
        res['seconds'] = time.perf_counter() - start
        print_plain(res, args)
    if args.markdown:
        print_markdown(arch_rows, cfg_rows, argv)


if __name__ == '__main__':
    main()
