# UperNet + GlobalMamba-tiny (embed 192, depth 24) on ADE20K, 512x512 crops, 160k iterations.
# Hardware: 8 GPUs x 2 images (total batch 16); roughly 1-1.5 days on 8 V100/A100 with the
#   mamba-ssm kernels (estimate, not measured).
# Reference (from papers, NOT measured by us): Vim-Ti + UperNet reaches 41.0 mIoU (single
#   scale) on ADE20K val (Vim paper, Zhu et al. 2024, Table 2; 60k iters x batch 32).
#   The GlobalMamba paper (arXiv 2410.10316) states ADE20K segmentation results for
#   GlobalMamba; we could not verify its numbers here and have not reproduced them.
# Pretrained weights: convert the ImageNet classifier first,
#   python tools/convert_checkpoint.py CLASSIFIER.pth pretrain/globalmamba_tiny.pth --arch tiny
# Train: tools/dist_train.sh configs/upernet_globalmamba_ade20k.py 8
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmglobalmamba'], allow_failed_imports=False)

crop_size = (512, 512)
embed_dims = 192
pretrained = 'pretrain/globalmamba_tiny.pth'
# SyncBN for multi-GPU training; tools/train.py turns it into BN on machines without CUDA.
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
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
    decode_head=dict(
        in_channels=[embed_dims] * 4,
        channels=embed_dims,
        num_classes=150,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=embed_dims,
        in_index=2,
        num_classes=150,
        norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# AdamW with layer-wise lr decay (Vim's fine-tuning recipe: lr 1e-4, wd 0.05, decay 0.92).
# Mixed precision: `tools/train.py CONFIG --amp` (fp16 AmpOptimWrapper on CUDA; bf16 autocast
# on CPU for segmentors), or in the config:
#   optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic', ...)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='GlobalMambaLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.92))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=160000),
]

# 8 GPUs x 2 images per GPU
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
