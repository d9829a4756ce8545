"""Every config under configs/ builds and runs once on CPU (predict, and a training
forward+backward) on a small random image, so that no config rots."""
import glob
import os.path as osp
import sys

import pytest
from mmengine.config import Config

import mmglobalmamba  # noqa: F401
from mmglobalmamba.checks.config_check import check_config
from mmglobalmamba.engine.config import build_model_on_cpu

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(
    osp.join(ROOT, 'configs', '**', '*.py'), recursive=True) if '_base_' not in p)


def test_configs_found():
    assert len(CONFIGS) >= 8, CONFIGS


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_runs(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert cfg.get('default_scope') in ('mmseg', 'mmdet')
    assert cfg.model.backbone.type == 'GlobalMamba'
    if cfg.model.get('train_cfg', {}).get('rcnn') is not None:
        # sample fewer RoIs than COCO training does: 512 RoIs per image through the 12544->1024
        # box head cost tens of GFLOPs on CPU without testing anything more
        cfg.model.train_cfg.rcnn.sampler.num = 32
        cfg.model.train_cfg.rpn_proposal.max_per_img = 100
    print(check_config(cfg, shape=(64, 64), loss=True))


@pytest.mark.parametrize('config,convert_args', [
    ('configs/upernet_globalmamba_ade20k.py', []),
    ('configs/upernet_vim-tiny_ade20k.py', ['--serialization', 'raster', '--bimamba']),
])
def test_pretrained_init_from_converted_classifier(config, convert_args, tmp_path, capsys):
    """The configs' pretrained path: a classifier in the released format (weights under
    'model', an argparse.Namespace in 'args', a head) goes through
    tools/convert_checkpoint.py and initializes the config's backbone exactly."""
    import argparse

    import torch
    from mmglobalmamba.registry import MODELS

    cfg = Config.fromfile(osp.join(ROOT, config))
    bb_cfg = cfg.model.backbone.to_dict()
    torch.manual_seed(1)
    classifier = MODELS.build(dict(
        type='GlobalMamba', arch=bb_cfg['arch'], img_size=224,
        serialization=bb_cfg['serialization'], bimamba=bb_cfg['bimamba']))
    weights = {k: v for k, v in classifier.state_dict().items()
               if not k.startswith(('out_norms', 'pyramid'))}
    weights['head.weight'] = torch.randn(1000, classifier.embed_dims)
    weights['head.bias'] = torch.zeros(1000)
    src, dst = tmp_path / 'released.pth', tmp_path / 'pretrain' / 'backbone.pth'
    torch.save(dict(model=weights, optimizer={}, epoch=299,
                    args=argparse.Namespace(model='globalmamba')), src)
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import convert_checkpoint
    finally:
        sys.path.pop(0)
    convert_checkpoint.main([str(src), str(dst), '--arch', bb_cfg['arch'], *convert_args])
    printed = capsys.readouterr().out
    assert 'dropped (2): head.weight, head.bias' in printed, printed
    assert 'unexpected' not in printed

    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(dst))
    model = build_model_on_cpu(cfg)
    model.backbone.init_weights()
    for key, value in weights.items():
        if not key.startswith('head.'):
            assert torch.equal(model.backbone.state_dict()[key], value), key


def test_missing_pretrained_file_says_how_to_start(tmp_path):
    """A main config without its pretrained file stops at init with what to do; the
    documented override trains from scratch."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/upernet_globalmamba_ade20k.py'))
    cfg.model.backbone.arch = dict(embed_dims=32, depth=2)
    cfg.model.backbone.out_indices = (0, 0, 1, 1)
    missing = str(tmp_path / 'pretrain' / 'globalmamba_tiny.pth')
    cfg.model.backbone.init_cfg.checkpoint = missing
    model = build_model_on_cpu(cfg)
    with pytest.raises(FileNotFoundError) as err:
        model.backbone.init_weights()
    message = str(err.value)
    assert missing in message and 'tools/convert_checkpoint.py' in message
    assert '--cfg-options model.backbone.init_cfg=None' in message
    cfg.merge_from_dict({'model.backbone.init_cfg': None})  # what --cfg-options does
    model = build_model_on_cpu(cfg)
    model.backbone.init_weights()                          # random init: nothing to read
    assert model.backbone.init_cfg is None
