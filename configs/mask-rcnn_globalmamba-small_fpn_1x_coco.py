# Mask R-CNN + FPN with a GlobalMamba-small backbone (embed 384, depth 24) on COCO 2017,
# 1x schedule (12 epochs), single scale 1333x800.
# Hardware: 8 GPUs x 2 images (total batch 16); roughly 1.5-2 days on 8 V100/A100 with the
#   mamba-ssm kernels (estimate, not measured).
# Reference (from papers, NOT measured by us): the GlobalMamba paper (arXiv 2410.10316) states
#   COCO detection results; we could not verify its setting or numbers here and have not
#   reproduced them. We know of no published Mask R-CNN 1x number for Vim-S.
# Pretrained weights:
#   python tools/convert_checkpoint.py CLASSIFIER.pth pretrain/globalmamba_small.pth --arch small
_base_ = './mask-rcnn_globalmamba_fpn_1x_coco.py'

embed_dims = 384
pretrained = 'pretrain/globalmamba_small.pth'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4))
