# Mask R-CNN + FPN with a GlobalMamba-tiny backbone (embed 192, depth 24) on COCO 2017,
# 1x schedule (12 epochs), single scale 1333x800.
# Hardware: 8 GPUs x 2 images (total batch 16); roughly 1 day on 8 V100/A100 with the mamba-ssm
#   kernels (estimate, not measured). An 800x1344 image is a 5563-token sequence.
# Reference (from papers, NOT measured by us): the GlobalMamba paper (arXiv 2410.10316) states
#   COCO detection results; we could not verify its setting or numbers here. For Vim, the
#   closest published number: Vim-Ti with a ViTDet-style Cascade Mask R-CNN reaches 45.7 box AP
#   / 39.2 mask AP (Vim paper, Zhu et al. 2024, Table 3; a stronger detector and a longer
#   schedule than this config). We have not reproduced either.
# Pretrained weights:
#   python tools/convert_checkpoint.py CLASSIFIER.pth pretrain/globalmamba_tiny.pth --arch tiny
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmglobalmamba'], allow_failed_imports=False)

embed_dims = 192
pretrained = 'pretrain/globalmamba_tiny.pth'
# SyncBN for multi-GPU training; tools/train.py turns it into BN on machines without CUDA.
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    backbone=dict(
        _delete_=True,
        type='GlobalMamba',
        arch='tiny',
        img_size=224,  # pretraining resolution: pos_embed is resized per band at run time
        patch_size=16,
        serialization='frequency',
        bimamba=False,
        out_indices=(5, 11, 17, 23),
        pyramid_strides=(4, 8, 16, 32),
        drop_path_rate=0.1,
        final_norm=True,
        out_norm_cfg=dict(type='LN', eps=1e-6),
        norm_cfg=norm_cfg,
        # Activation checkpointing: turn on when a 16-24 GB GPU runs out of memory (or for
        # larger batches). Same loss and gradients; keeps only each block's input and
        # recomputes the block in backward, for about one more forward pass per step.
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4))

# AdamW with layer-wise lr decay (as for plain ViT/Vim backbones; decay rate not tuned by us)
# Mixed precision: `tools/train.py CONFIG --amp` (fp16 AmpOptimWrapper on CUDA; bf16 autocast
# on CPU for segmentors), or in the config:
#   optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic', ...)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='GlobalMambaLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.92),
    clip_grad=dict(max_norm=1.0, norm_type=2))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

# 8 GPUs x 2 images per GPU
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
