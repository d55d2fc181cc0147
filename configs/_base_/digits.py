# Digits (scikit-learn, 8x8 upscaled to 32x32), SGD with cosine decay, CPU friendly runtime.
default_scope = 'mmkd'

image_size = 32
data_preprocessor = dict(num_classes=10, mean=[77.9] * 3, std=[82.5] * 3)
train_pipeline = [
    dict(type='mmpretrain.RandomCrop', crop_size=image_size, padding=2),
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [dict(type='mmpretrain.PackInputs')]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='DigitsDataset', split='train', image_size=image_size,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsDataset', split='val', image_size=image_size,
                 pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 60
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4,
                                    nesterov=True))
# `end` explicit: mmengine's default (train_cfg.max_epochs) would follow a --cfg-options change of
# max_epochs, and a resumed run keeps the checkpoint's `end` (a flat learning rate after it).
param_scheduler = dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, eta_min=0,
                       begin=0, end=max_epochs)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
