"""Every config under configs/ builds and runs once on CPU (predict, and a training
forward+backward) on a small random image, so that no config rots."""
import glob
import os.path as osp
import sys

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))

import mmglobalmamba  # noqa: E402,F401
from check_config import check_config  # noqa: E402

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
