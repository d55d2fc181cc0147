# The data-free control of DF-DearKD on digits: vanilla KD from the teacher ResNet-18 w32 into
# the ResNet-18 w4 student on the synthetic set of datafree_synthetic_digits.py (no real training
# image; the images are randomly warped while the student trains and the teacher sees the same
# views): KL at T 4 plus 0.5 x cross-entropy on the synthesis labels, 2,000 iterations of 64
# images. Validation is on the real val split.
_base_ = ['./kd_resnet18_w32_w4.py', './datafree_synthetic_digits.py']

max_iters = 2000

model = dict(
    architecture=dict(head=dict(loss=dict(type='CrossEntropyLoss', loss_weight=0.5))),
    distiller=dict(tap_pairs=[dict(name='kd', student='head.fc',
                                   loss=dict(type='KDLoss', tau=4, loss_weight=1.0))]))
train_dataloader = dict(dataset={{_base_.synthetic_dataset}},
                        sampler=dict(type='InfiniteSampler', shuffle=True))

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=500)
param_scheduler = dict(_delete_=True, type='CosineAnnealingLR', by_epoch=False, begin=0,
                       end=max_iters, T_max=max_iters, eta_min=0)
default_hooks = dict(logger=dict(interval=100),
                     checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
