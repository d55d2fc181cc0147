# PKD: Faster R-CNN R-101 (mmdet model zoo, 2x) -> Faster R-CNN R-50 (ImageNet-initialised
# backbone), stock 2x schedule. Pearson-correlation imitation of the FPN outputs P2..P5: the
# output convs `neck.fpn_convs.0..3` (the fifth level, P6, is a max-pool of P5 and is left out,
# as in MMRazor's config), weight 6 per level next to the stock RPN and RoI losses: MMRazor's
# setting for this pair (38.4 -> 40.3 mAP, 2x). The teacher runs its backbone and neck up to
# P5; its P6, RPN and RoI heads never run. To distil every level, tap the whole neck once:
# dict(name='fpn', student='neck', loss=dict(type='PKDLoss', loss_weight=6)).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']

num_levels = 4
model = dict(
    _delete_=True,
    _scope_='mmkd',
    type='SingleTeacherDistill',
    architecture=dict(
        cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
        # The stock ImageNet initialisation of the student's backbone (cfg_path strips it).
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))),
    teacher=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py', pretrained=True),
    distiller=dict(
        type='ConfigurableDistiller',
        tap_pairs=[
            dict(name=f'fpn{level}', student=f'neck.fpn_convs.{level}',
                 loss=dict(type='PKDLoss', loss_weight=6.0))
            for level in range(num_levels)
        ]))
optim_wrapper = dict(constructor='mmkd.DefaultOptimWrapperConstructor')
