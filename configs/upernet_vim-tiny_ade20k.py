# Vim-tiny baseline in the same pipeline: UperNet on ADE20K, 512x512, 160k iterations, with the
# GlobalMamba backbone switched to Vim's token order (row-major raster, cls token in the middle)
# and Vim's bidirectional mixers (forward + backward scan, the `*_b` parameters).
# Everything else (head, data, schedule, optimizer) equals upernet_globalmamba_ade20k.py, so the
# two runs compare serializations.
# Hardware: 8 GPUs x 2 images (total batch 16); about 1.5x the GlobalMamba-tiny time (two scans
#   per block; estimate, not measured).
# Reference (from the Vim paper, NOT measured by us): Vim-Ti + UperNet 41.0 mIoU on ADE20K val
#   (Zhu et al. 2024, Table 2; their run: 60k iters x batch 32).
# Pretrained weights: a Vim-Ti ImageNet classifier converted to backbone weights
#   (tools/convert_checkpoint.py ... --serialization raster --bimamba).
_base_ = './upernet_globalmamba_ade20k.py'

pretrained = 'pretrain/vim_tiny.pth'

model = dict(
    backbone=dict(
        serialization='raster',
        bimamba=True,
        if_devide_out=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
