# CPU demo: UperNet + GlobalMamba-tiny (full depth 24, embed 192, random init) learns to segment
# the synthetic shapes of tools/make_synthetic_seg.py (ADE20K layout, 128x128, 4 classes:
# background, circle, square, triangle), then evaluates mIoU on the held-out split.
# Hardware: 1 CPU process x 8 images, 300 iterations.
# Results: the README's demo table (`make demo`, measured on a 2-core CPU; the one place the
#   numbers are kept). Chance level: predicting "background" everywhere gives about 20% mIoU.
# This is a pipeline demo, not a benchmark: no paper reference exists for it.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmglobalmamba'], allow_failed_imports=False)

data_root = 'data/synthetic_seg'
classes = ('background', 'circle', 'square', 'triangle')
palette = [[120, 120, 120], [6, 230, 230], [255, 180, 0], [220, 20, 60]]
crop_size = (128, 128)
embed_dims = 192
max_iters = 300
# Written for multi-GPU like the real recipes; tools/train.py turns SyncBN into BN on CPU.
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
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
    decode_head=dict(
        in_channels=[embed_dims] * 4,
        pool_scales=(1, 2),
        channels=64,
        dropout_ratio=0.0,
        num_classes=len(classes),
        norm_cfg=norm_cfg),
    auxiliary_head=None,
    test_cfg=dict(mode='whole'))

dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# Random init, so no layer-wise decay (rate 1.0); the constructor still keeps weight decay
# off the SSM parameters, embeddings, norms and biases.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='GlobalMambaLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=30, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
