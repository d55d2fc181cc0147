# PKD: RetinaNet R-101 (mmdet model zoo, 2x) -> RetinaNet R-50 (ImageNet-initialised backbone),
# stock 2x schedule (SGD lr 0.01). Pearson-correlation imitation of the FPN outputs P3..P6 (the
# output convs `neck.fpn_convs.0..3`; P7 is left out, as in MMRazor's RetinaNet config), weight
# 10 per level next to the stock focal + L1 losses: MMRazor's RetinaNet setting (its reference
# run used an X-101-64x4d teacher: 37.4 -> 40.8 mAP). The teacher runs its backbone and neck up
# to P6; its P7 conv and its head never run.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

num_levels = 4
model = dict(
    _delete_=True,
    _scope_='mmkd',
    type='SingleTeacherDistill',
    architecture=dict(
        cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))),
    teacher=dict(cfg_path='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py', pretrained=True),
    distiller=dict(
        type='ConfigurableDistiller',
        tap_pairs=[
            dict(name=f'fpn{level}', student=f'neck.fpn_convs.{level}',
                 loss=dict(type='PKDLoss', loss_weight=10.0))
            for level in range(num_levels)
        ]))
optim_wrapper = dict(constructor='mmkd.DefaultOptimWrapperConstructor')
