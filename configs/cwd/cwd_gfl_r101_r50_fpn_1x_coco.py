# CWD for detection: GFL R-101 (mmdet model zoo, multi-scale 2x) -> GFL R-50 (ImageNet-initialised
# backbone), stock 1x schedule. Channel-wise distillation of the classification logits of every
# pyramid level: `bbox_head.gfl_cls` is one conv shared by the five levels (P3..P7), so it runs
# five times per forward and `data_idx` picks the level (`python tools/list_taps.py CONFIG
# --modules 'bbox_head.gfl_*'` shows the five calls). tau = 1 and weight 5 per level, next to the
# stock QFL + DFL + GIoU losses: MMRazor's setting for this pair (40.2 -> 41.9 mAP). The teacher
# runs its backbone, neck and head up to its fifth classification conv, and no further.
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']

num_levels = 5
model = dict(
    _delete_=True,
    _scope_='mmkd',
    type='SingleTeacherDistill',
    architecture=dict(
        cfg_path='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        # The stock ImageNet initialisation of the student's backbone (cfg_path strips it).
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))),
    teacher=dict(cfg_path='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py', pretrained=True),
    distiller=dict(
        type='ConfigurableDistiller',
        tap_pairs=[
            dict(name=f'cls_p{level + 3}', student='bbox_head.gfl_cls', data_idx=level,
                 loss=dict(type='CWDLoss', tau=1.0, loss_weight=5.0))
            for level in range(num_levels)
        ]))
optim_wrapper = dict(constructor='mmkd.DefaultOptimWrapperConstructor')
