"""Configs made ready for this machine (mmglobalmamba.engine.config) and the run helpers
of mmglobalmamba.engine.runner, each checked on a small hand-made config."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmglobalmamba  # noqa: F401
from mmglobalmamba.engine.config import (build_model_on_cpu, choose_work_dir, drop_pretrained,
                                         prepare_config, syncbn_to_bn)
from mmglobalmamba.engine.runner import enable_visualization, set_resume, write_metrics

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG_CONFIG = osp.join(ROOT, 'configs', 'upernet_globalmamba_ade20k.py')


def test_syncbn_to_bn_rewrites_every_norm():
    cfg = dict(model=dict(backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                          heads=[dict(norm_cfg=dict(type='SyncBN')), dict(type='LN')]),
               other=('SyncBN',))
    out = syncbn_to_bn(cfg)
    assert out['model']['backbone']['norm_cfg'] == dict(type='BN', requires_grad=True)
    assert out['model']['heads'][0]['norm_cfg']['type'] == 'BN'
    assert out['model']['heads'][1]['type'] == 'LN'
    assert out['other'] == ('SyncBN',)  # only norm *types* change
    assert cfg['model']['backbone']['norm_cfg']['type'] == 'SyncBN'  # input untouched


def test_drop_pretrained_removes_every_pretrained_init():
    cfg = dict(pretrained='x.pth', backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='a')),
               heads=[dict(init_cfg=dict(type='Normal', std=0.01)),
                      dict(init_cfg=dict(type='Pretrained', checkpoint='b'))])
    drop_pretrained(cfg)
    assert 'pretrained' not in cfg
    assert cfg['backbone']['init_cfg'] is None and cfg['heads'][1]['init_cfg'] is None
    assert cfg['heads'][0]['init_cfg'] == dict(type='Normal', std=0.01)  # other inits stay


def test_prepare_config_checks_scope_and_turns_syncbn_into_bn_on_cpu():
    cfg = Config.fromfile(SEG_CONFIG)
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    cfg = prepare_config(cfg)
    assert cfg.launcher == 'none'
    if not torch.cuda.is_available():
        assert cfg.model.decode_head.norm_cfg.type == 'BN'
        assert cfg.model.backbone.norm_cfg.type == 'BN'
    with pytest.raises(ValueError, match="default_scope is 'mmpretrain'.*'mmseg'"):
        prepare_config(Config(dict(default_scope='mmpretrain', model=dict())))


def test_choose_work_dir_precedence():
    cfg = Config(dict(default_scope='mmseg'))
    assert choose_work_dir(cfg, 'configs/a_b.py') == osp.join('./work_dirs', 'a_b')
    cfg.work_dir = 'from_config'
    assert choose_work_dir(cfg, 'configs/a_b.py') == 'from_config'
    assert choose_work_dir(cfg, 'configs/a_b.py', 'from_cli') == 'from_cli'


def test_build_model_on_cpu_without_reading_weights(tmp_path):
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'no.pth'))
    model = build_model_on_cpu(cfg, pretrained=False)
    assert type(model).__name__ == 'EncoderDecoder'
    assert type(model.backbone).__name__ == 'GlobalMamba'
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert model.backbone.init_cfg is None
    model = build_model_on_cpu(cfg)  # keeps the init: reading it is init_weights' job
    with pytest.raises(FileNotFoundError, match=r"weights '.*no\.pth' do not exist"):
        model.backbone.init_weights()


def test_set_resume():
    cfg = set_resume(Config(dict(load_from='w.pth')), None)
    assert cfg.get('resume') is None and cfg.load_from == 'w.pth'
    cfg = set_resume(Config(dict(load_from='w.pth')), 'auto')
    assert cfg.resume is True and cfg.load_from is None
    cfg = set_resume(Config(dict()), 'iter_10.pth')
    assert cfg.resume is True and cfg.load_from == 'iter_10.pth'


def test_enable_visualization_per_scope(tmp_path):
    seg = Config(dict(default_scope='mmseg', visualizer=dict(type='SegLocalVisualizer'),
                      default_hooks=dict(visualization=dict(type='SegVisualizationHook'))))
    enable_visualization(seg, str(tmp_path))
    assert seg.default_hooks.visualization.draw is True
    assert seg.visualizer.save_dir == str(tmp_path)
    det = Config(dict(default_scope='mmdet',
                      default_hooks=dict(visualization=dict(type='DetVisualizationHook'))))
    enable_visualization(det, 'rel')
    assert det.default_hooks.visualization.test_out_dir == osp.abspath('rel')
    with pytest.raises(RuntimeError, match='needs default_hooks.visualization'):
        enable_visualization(Config(dict(default_scope='mmseg', default_hooks=dict())), 'x')


def test_write_metrics(tmp_path):
    path = write_metrics({'mIoU': torch.tensor(91.5), 'note': object}, str(tmp_path))
    data = json.load(open(path))
    assert data['mIoU'] == pytest.approx(91.5) and data['note'].startswith('<class')
