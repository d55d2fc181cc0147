# CrossKD: RetinaNet R-101 (mmdet model zoo, 2x) -> RetinaNet R-50 (ImageNet-initialised
# backbone), stock 2x schedule. Cross-head predictions from the student's head features after
# its third stacked conv through the teacher's fourth conv and prediction layers, distilled
# towards the teacher's: quality focal loss on the class scores (beta 1, weight 1) and GIoU of
# the decoded boxes (weight 1), next to the student's own focal + L1 losses. The official 2x
# config's settings (37.4 -> 39.7 mAP). The teacher runs its backbone, neck and head forward
# once (no loss, no NMS).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    _scope_='mmkd',
    type='CrossKDDistill',
    architecture=dict(
        cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))),
    teacher=dict(cfg_path='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py', pretrained=True),
    reused_head_idx=3,
    loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
    loss_box_kd=dict(type='mmdet.GIoULoss', loss_weight=1.0))
optim_wrapper = dict(constructor='mmkd.DefaultOptimWrapperConstructor')
