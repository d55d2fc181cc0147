# CrossKD: GFL R-101 (mmdet model zoo, multi-scale 2x) -> GFL R-50 (ImageNet-initialised
# backbone), stock 1x schedule. The student's head features after its third stacked conv (of
# four, before the activation) get the teacher's per-channel statistics and run through the
# teacher's fourth conv and prediction layers; those cross-head predictions are distilled
# towards the teacher's: quality focal loss on the class scores (beta 1, weight 1), KL of the
# box distributions (weight 3) and GIoU of the decoded boxes (weight 2), next to the student's
# own QFL + DFL + GIoU losses. The official config's settings (40.2 -> 43.7 mAP). The teacher
# runs its backbone, neck and head forward once (no loss, no NMS).
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']

model = dict(
    _delete_=True,
    _scope_='mmkd',
    type='CrossKDDistill',
    architecture=dict(
        cfg_path='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        # The stock ImageNet initialisation of the student's backbone (cfg_path strips it).
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))),
    teacher=dict(cfg_path='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py', pretrained=True),
    reused_head_idx=3,
    loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
    loss_dist_kd=dict(type='KDDistributionLoss', tau=1.0, loss_weight=3.0),
    loss_box_kd=dict(type='mmdet.GIoULoss', loss_weight=2.0))
optim_wrapper = dict(constructor='mmkd.DefaultOptimWrapperConstructor')
