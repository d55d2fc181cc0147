"""SingleTeacherDistill's build-time dry run on two-stage detectors: their ``tensor`` mode needs
each image's metainfo to turn the RPN outputs into proposals (mmdet's RPN reads it before it
runs), so taps in the RPN head record only when the dry run gives the models data samples."""
import math

import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmkd.models import build_model_from_cfg
from mmkd.registry import MODELS

FASTER_RCNN_R18 = 'mmdet::faster_rcnn/faster-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py'


def detection_samples(batch, size=64):
    samples = []
    for i in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1.0, 1.0),
                                             batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[4.0 + i, 8.0, 40.0, 50.0]]),
                                           labels=torch.tensor([i]))
        samples.append(sample)
    return samples


def test_rpn_logits_of_every_level_are_tapped_through_the_dry_run():
    torch.manual_seed(0)
    teacher = build_model_from_cfg(dict(cfg_path=FASTER_RCNN_R18, pretrained=False), 'teacher')
    model = MODELS.build(dict(
        type='mmkd.SingleTeacherDistill', dry_run_shape=(3, 64, 64), teacher=teacher,
        architecture=dict(cfg_path=FASTER_RCNN_R18, pretrained=False),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=[
            dict(name=f'rpn{level}', student='rpn_head.rpn_cls', data_idx=level,
                 loss=dict(type='CWDLoss', tau=1.0, loss_weight=1.0))
            for level in range(5)])))
    model.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    losses = model(x, detection_samples(2), mode='loss')
    distill = [losses[f'loss_rpn{level}'] for level in range(5)]
    assert all(math.isfinite(loss.item()) for loss in distill)
    assert distill[0] > 0  # 16x16 positions at P2: student and teacher maps differ
    assert any(name.startswith('student.loss_rpn') for name in losses)  # the RPN's own loss
