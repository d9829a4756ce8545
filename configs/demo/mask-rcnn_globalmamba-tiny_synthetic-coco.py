# CPU demo: Mask R-CNN + FPN + GlobalMamba-tiny (full depth 24, embed 192, random init) learns to
# detect and segment the synthetic shapes of tools/make_synthetic_coco.py (COCO layout, 128x128,
# 3 classes: circle, square, triangle), then evaluates bbox and segm AP on the held-out split.
# Heads are slimmed (FPN 64 channels, fewer RoIs) so that it trains in minutes.
# Hardware: 1 CPU process x 4 images, 300 iterations.
# Results: the README's demo table (`make demo`, measured on a 2-core CPU; the one place the
#   numbers are kept). Chance level: AP about 0.
# This is a pipeline demo, not a benchmark: no paper reference exists for it.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmglobalmamba'], allow_failed_imports=False)

data_root = 'data/synthetic_coco/'
classes = ('circle', 'square', 'triangle')
palette = [(6, 230, 230), (255, 180, 0), (220, 20, 60)]
img_scale = (128, 128)  # the generated images' size: Resize is a no-op that records it
embed_dims = 192
fpn_channels = 64
max_iters = 300
# Written for multi-GPU like the real recipes; tools/train.py turns SyncBN into BN on CPU.
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    backbone=dict(
        _delete_=True,
        type='GlobalMamba',
        arch='tiny',
        img_size=128,  # random init: lay out pos_embed for the demo's own image size
        patch_size=16,
        serialization='frequency',
        out_indices=(5, 11, 17, 23),
        pyramid_strides=(4, 8, 16, 32),
        drop_path_rate=0.0,
        norm_cfg=norm_cfg,
        init_cfg=None),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=fpn_channels),
    rpn_head=dict(
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(
            in_channels=fpn_channels, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(
            num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels,
            num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=50),
        rcnn=dict(max_per_img=20)))

dataset = dict(
    type='CocoDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator

# Random init, so no layer-wise decay (rate 1.0); the constructor still keeps weight decay
# off the SSM parameters, embeddings, norms and biases.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='GlobalMambaLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0),
    clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8)], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False, score_thr=0.5))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
