"""Complexity reports: the numbers and tables that ``tools/get_flops.py`` prints."""
import time

import torch

from mmglobalmamba.benchmark.measure import row_name
from mmglobalmamba.engine.config import build_backbone, build_model_from_config
from mmglobalmamba.engine.synthetic_batch import TensorForward

from .complexity import analyze_complexity, classifier_param_count
from .complexity import format_count as fc


def backbone_complexity(arch, shape, backend=None):
    """Params and FLOPs of a GlobalMamba backbone preset at ``shape`` (H, W), batch 1, with
    the pyramid, scan and DCT shares and the released classifier's parameter count."""
    start = time.perf_counter()
    model = build_backbone(arch)
    res = analyze_complexity(model, (torch.randn(1, 3, *shape), ), backend=backend)
    mo = res['analyzer'].by_module_and_operator()
    res.update(
        name=row_name(arch), shape=shape,
        pyramid_params=res['params_by_module'].get('pyramid', 0),
        pyramid_flops=res['flops_by_module'].get('pyramid', 0),
        scan_flops=res['flops_by_operator'].get('selective_scan', 0),
        dct_flops=mo.get('', {}).get('matmul', 0),
        classifier_params=classifier_param_count(model), seconds=time.perf_counter() - start)
    return res


def config_complexity(path, shape, backend=None, cfg_options=None):
    """Params and FLOPs of a config's full model at ``shape`` (H, W), batch 1, with the
    backbone's share and the inference parameter count (auxiliary head left out)."""
    start = time.perf_counter()
    model, task = build_model_from_config(path, cfg_options)
    res = analyze_complexity(TensorForward(model, task, shape), (torch.randn(1, 3, *shape), ),
                             backend=backend)
    bb = 'model.backbone'
    res.update(name=row_name(path), shape=shape, task=task,
               backbone_params=res['params_by_module'].get(bb, 0),
               backbone_flops=res['flops_by_module'].get(bb, 0),
               infer_params=res['params'] - res['params_by_module'].get(
                   'model.auxiliary_head', 0),
               scan_flops=res['flops_by_operator'].get('selective_scan', 0),
               seconds=time.perf_counter() - start)
    return res


def _fmt_shape(shape):
    return f'{shape[0]}x{shape[1]}'


def print_complexity(res, show_table=False, max_depth=3):
    """Print one result of :func:`backbone_complexity` / :func:`config_complexity`."""
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
    if show_table:
        from mmengine.analysis.print_helper import complexity_stats_table
        print(complexity_stats_table(res['analyzer'], max_depth=max_depth,
                                     show_param_shapes=False))


def print_complexity_markdown(arch_rows, cfg_rows, command):
    """The README's two tables (backbones, configs) for the results of one run."""
    cmd = command
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
