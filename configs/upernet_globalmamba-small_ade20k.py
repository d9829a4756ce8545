# UperNet + GlobalMamba-small (embed 384, depth 24) on ADE20K, 512x512 crops, 160k iterations.
# Hardware: 8 GPUs x 2 images (total batch 16); roughly 2 days on 8 V100/A100 with the
#   mamba-ssm kernels (estimate, not measured).
# Reference (from papers, NOT measured by us): Vim-S + UperNet reaches 44.9 mIoU (single
#   scale) on ADE20K val (Vim paper, Zhu et al. 2024, Table 2). The GlobalMamba paper
#   (arXiv 2410.10316) states ADE20K results; we could not verify its numbers here and have
#   not reproduced them.
# Pretrained weights:
#   python tools/convert_checkpoint.py CLASSIFIER.pth pretrain/globalmamba_small.pth --arch small
_base_ = './upernet_globalmamba_ade20k.py'

embed_dims = 384
pretrained = 'pretrain/globalmamba_small.pth'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims),
    auxiliary_head=dict(in_channels=embed_dims))
