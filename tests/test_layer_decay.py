"""Layer-wise lr decay: every parameter of real GlobalMamba models (inside an mmseg and an
mmdet model, and bare) lands in exactly one param group with the lr and weight decay that the
rules give, computed here from the parameter names alone."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import mmglobalmamba  # noqa: F401
from mmglobalmamba.engine.config import build_model_on_cpu

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

NO_DECAY_LEAVES = {'A_log', 'A_b_log', 'D', 'D_b', 'bias'}


def expected(name, param, depth, rate, base_lr, base_wd, prefix='backbone.'):
    """(lr, weight_decay) of a parameter, from the rules in the issue."""
    if prefix and not name.startswith(prefix):
        layer = depth + 1  # neck and heads
    else:
        short = name[len(prefix):] if prefix else name
        first = short.split('.')[0]
        if first in ('patch_embed', 'pos_embed', 'cls_token'):
            layer = 0
        elif first == 'layers':
            layer = int(short.split('.')[1]) + 1
        else:  # norm_f, out_norms, pyramid
            layer = depth + 1
    leaf = name.split('.')[-1]
    no_decay = param.ndim == 1 or leaf in NO_DECAY_LEAVES or leaf in ('pos_embed', 'cls_token')
    return base_lr * rate ** (depth + 1 - layer), 0. if no_decay else base_wd


def check_groups(model, optim_cfg, prefix='backbone.'):
    wrapper = build_optim_wrapper(model, optim_cfg)
    groups = wrapper.optimizer.param_groups
    owner = {}
    for group in groups:
        for p in group['params']:
            assert id(p) not in owner, 'a parameter is in two groups'
            owner[id(p)] = group
    depth = optim_cfg['paramwise_cfg']['num_layers']
    rate = optim_cfg['paramwise_cfg']['layer_decay_rate']
    base_lr = optim_cfg['optimizer']['lr']
    base_wd = optim_cfg['optimizer']['weight_decay']
    named = dict(model.named_parameters())
    assert len(owner) == len(named), 'every trainable parameter is in exactly one group'
    for name, p in named.items():
        group = owner[id(p)]
        lr, wd = expected(name, p, depth, rate, base_lr, base_wd, prefix)
        assert group['lr'] == pytest.approx(lr, rel=1e-12), name
        assert group['weight_decay'] == wd, name
    return {name: owner[id(p)] for name, p in named.items()}, wrapper


OPTIM = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
    constructor='GlobalMambaLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.9))


@pytest.mark.parametrize('config', [
    'configs/upernet_vim-tiny_ade20k.py',  # mmseg, bimamba (*_b parameters)
    'configs/mask-rcnn_globalmamba_fpn_1x_coco.py',  # mmdet
])
def test_groups_in_full_models(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    model = build_model_on_cpu(cfg)
    by_name, _ = check_groups(model, OPTIM)
    lr, wd, r = 2e-4, 0.05, 0.9
    spot = {
        'backbone.pos_embed': (lr * r ** 25, 0.),
        'backbone.cls_token': (lr * r ** 25, 0.),
        'backbone.patch_embed.proj.weight': (lr * r ** 25, wd),
        'backbone.patch_embed.proj.bias': (lr * r ** 25, 0.),
        'backbone.layers.0.mixer.in_proj.weight': (lr * r ** 24, wd),
        'backbone.layers.0.norm.weight': (lr * r ** 24, 0.),
        'backbone.layers.23.mixer.A_log': (lr * r, 0.),
        'backbone.layers.23.mixer.D': (lr * r, 0.),
        'backbone.layers.23.mixer.dt_proj.bias': (lr * r, 0.),
        'backbone.norm_f.weight': (lr, 0.),
    }
    if 'vim' in config:
        spot['backbone.layers.7.mixer.A_b_log'] = (lr * r ** 17, 0.)
        spot['backbone.layers.7.mixer.D_b'] = (lr * r ** 17, 0.)
        spot['backbone.layers.7.mixer.conv1d_b.weight'] = (lr * r ** 17, wd)
        spot['decode_head.conv_seg.weight'] = (lr, wd)
    else:
        spot['neck.fpn_convs.0.conv.weight'] = (lr, wd)
        spot['roi_head.bbox_head.fc_cls.bias'] = (lr, 0.)
    for name, (want_lr, want_wd) in spot.items():
        assert by_name[name]['lr'] == pytest.approx(want_lr), name
        assert by_name[name]['weight_decay'] == want_wd, name


def test_bare_backbone_and_scheduler_keeps_ratios():
    from mmengine.optim import LinearLR
    from mmglobalmamba.registry import MODELS
    backbone = MODELS.build(dict(type='GlobalMamba', arch='tiny', img_size=64))
    by_name, wrapper = check_groups(backbone, OPTIM, prefix='')
    assert by_name['layers.3.mixer.x_proj.weight']['lr'] == pytest.approx(2e-4 * 0.9 ** 21)
    # a scheduler scales every group by the same factor, so the decay survives warm-up
    groups = wrapper.optimizer.param_groups
    before = [g['lr'] for g in groups]
    sched = LinearLR(wrapper.optimizer, start_factor=0.1, end=10, by_epoch=False)
    sched.step()
    ratios = [g['lr'] / b for g, b in zip(groups, before)]
    assert max(ratios) == pytest.approx(min(ratios))


def test_frozen_parameters_are_left_out_and_bad_depth_is_an_error():
    from mmglobalmamba.registry import MODELS
    backbone = MODELS.build(dict(type='GlobalMamba', arch='tiny', img_size=64, frozen_stages=2))
    wrapper = build_optim_wrapper(backbone, OPTIM)
    in_groups = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert id(backbone.layers[0].mixer.in_proj.weight) not in in_groups
    assert id(backbone.layers[5].mixer.in_proj.weight) in in_groups
    bad = dict(OPTIM, paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.9))
    with pytest.raises(ValueError, match='num_layers'):
        build_optim_wrapper(backbone, bad)
    with pytest.raises(KeyError, match='layer_decay_rate'):
        build_optim_wrapper(backbone, dict(OPTIM, paramwise_cfg=dict(num_layers=24)))


def test_num_layers_comes_from_the_model():
    """Without paramwise_cfg.num_layers the depth is the backbone's: a 6-block backbone gets
    the same groups as with num_layers=6 written out, inside a full model and bare."""
    from mmglobalmamba.registry import MODELS
    backbone = MODELS.build(dict(type='GlobalMamba', arch=dict(embed_dims=64, depth=6),
                                 img_size=64, out_indices=(1, 3, 4, 5)))
    implicit = dict(OPTIM, paramwise_cfg=dict(layer_decay_rate=0.9))
    explicit = dict(OPTIM, paramwise_cfg=dict(num_layers=6, layer_decay_rate=0.9))
    by_name, _ = check_groups(backbone, explicit, prefix='')
    lrs = {n: g['lr'] for n, g in by_name.items()}
    wrapper = build_optim_wrapper(backbone, implicit)
    got = {n: g['lr'] for g in wrapper.optimizer.param_groups for n in g['param_names']}
    assert got == pytest.approx(lrs)
    assert got['layers.0.mixer.in_proj.weight'] == pytest.approx(2e-4 * 0.9 ** 6)
    with pytest.raises(ValueError, match='num_layers is 24, but the backbone has depth 6'):
        build_optim_wrapper(backbone, OPTIM)
    with pytest.raises(TypeError, match='needs a backbone with a `depth`'):
        build_optim_wrapper(torch.nn.Linear(2, 2), implicit)
