# The digits teacher: ResNet-18 with stage widths 32..256 on the full training split.
_base_ = ['../_base_/digits.py', '../_base_/digits_resnet18.py']

max_epochs = 30
param_scheduler = dict(T_max=max_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
