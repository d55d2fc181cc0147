# DIST on ImageNet: mmpretrain ResNet-34 (model zoo weights) -> ResNet-18, the stock 100-epoch
# ResNet-18 recipe. Inter- and intra-class Pearson relations of the classifiers' softmax
# (`head.fc`): tau = 1, both relations weight 1, loss weight 2, next to the student's
# cross-entropy (weight 1): MMRazor's setting for this pair (69.90 -> 71.61 top-1). The
# intra-class relation correlates each class over the samples of one process's batch (32 here).
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']

model = dict(
    _delete_=True,
    _scope_='mmkd',
    type='SingleTeacherDistill',
    architecture=dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py'),
    teacher=dict(cfg_path='mmpretrain::resnet/resnet34_8xb32_in1k.py', pretrained=True),
    distiller=dict(
        type='ConfigurableDistiller',
        tap_pairs=[dict(name='dist', student='head.fc',
                        loss=dict(type='DISTLoss', inter_loss_weight=1.0,
                                  intra_loss_weight=1.0, tau=1.0, loss_weight=2.0))]))
optim_wrapper = dict(constructor='mmkd.DefaultOptimWrapperConstructor')
