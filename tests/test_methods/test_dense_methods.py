"""The CWD, PKD and DIST configs (configs/cwd, configs/pkd, configs/dist): one training iteration
each on tiny real data through tools/train.py's code path, with the stock models. The
distillation losses are logged and finite, the teacher is bit-identical to its checkpoint and
runs exactly as far as its last tap, the distillation gradient reaches the student's tapped
modules, and the student's weights load strictly into the stock model."""
import math

import pytest
from mmengine.config import Config

from helpers import assert_teacher_unchanged, config_path, tiny_run_options, train_recorded
from mmkd.apis.export import student_state_dict
from mmkd.models import build_model_from_cfg


def distill_gradient_reaches(runner, prefixes):
    """Backpropagate the distillation losses alone of one more batch: the student modules
    under ``prefixes`` get a gradient, the teacher none."""
    model = runner.model
    data = model.data_preprocessor(next(iter(runner.train_dataloader)), True)
    losses = model(**data, mode='loss')
    model.zero_grad()
    sum(v for k, v in losses.items() if k.startswith('loss_')).backward()
    reached = {name for name, p in model.student.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert all(p.grad is None for p in model.teacher.parameters())
    for prefix in prefixes:
        assert any(name.startswith(prefix) for name in reached), (prefix, sorted(reached)[:5])
    return reached


# teacher_calls: calls of teacher modules in the iteration (the teacher runs as far as its last
# tap, no further; mmseg calls decode_head.forward directly, so its layers are counted).
# reaches: student modules the distillation gradient reaches.
CASES = [
    # GFL's classification conv is shared by the five levels: five calls, the teacher stops
    # after the fifth (the box branch of the last level, gfl_reg and scales.4, never runs)
    ('cwd/cwd_gfl_r101_r50_fpn_1x_coco.py', 'det', [f'loss_cls_p{i}' for i in range(3, 8)],
     {'bbox_head.gfl_cls': 5, 'bbox_head.gfl_reg': 4, 'bbox_head.scales.4': 0},
     ['bbox_head.gfl_cls.', 'bbox_head.cls_convs.', 'neck.', 'backbone.layer4.']),
    ('cwd/cwd_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'seg',
     ['loss_cwd_logits'], {'decode_head.conv_seg': 1, 'auxiliary_head.conv_seg': 0},
     ['decode_head.conv_seg.', 'backbone.layer4.']),
    # the teacher stops after P5: no P6 max-pool (not a module), no RPN, no RoI head
    ('pkd/pkd_faster-rcnn_r101_r50_fpn_2x_coco.py', 'det', [f'loss_fpn{i}' for i in range(4)],
     {'neck.fpn_convs.3': 1, 'rpn_head.rpn_conv': 0, 'roi_head.bbox_head.fc_cls': 0},
     ['neck.fpn_convs.0.', 'neck.fpn_convs.3.', 'backbone.layer2.']),
    ('pkd/pkd_retinanet_r101_r50_fpn_2x_coco.py', 'det', [f'loss_fpn{i}' for i in range(4)],
     {'neck.fpn_convs.3': 1, 'neck.fpn_convs.4': 0, 'bbox_head.retina_cls': 0},
     ['neck.fpn_convs.0.', 'neck.fpn_convs.3.', 'backbone.layer2.']),
    ('dist/dist_resnet34_resnet18_8xb32_in1k.py', 'cls', ['loss_dist'],
     {'backbone': 1, 'head.fc': 1}, ['head.fc.', 'backbone.layer4.']),
    ('dist/dist_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'seg', ['loss_dist'],
     {'decode_head.conv_seg': 1, 'auxiliary_head.conv_seg': 0},
     ['decode_head.conv_seg.', 'backbone.layer4.']),
    ('dist/dist_deeplabv3_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'seg',
     ['loss_dist'], {'decode_head.conv_seg': 1, 'auxiliary_head.conv_seg': 0},
     ['decode_head.conv_seg.', 'decode_head.aspp_modules.', 'backbone.layer4.']),
]


@pytest.mark.parametrize('config,kind,loss_names,teacher_calls,reaches', CASES,
                         ids=['cwd-gfl', 'cwd-pspnet', 'pkd-faster-rcnn', 'pkd-retinanet',
                              'dist-in1k', 'dist-pspnet', 'dist-deeplabv3'])
def test_config_trains_one_iteration(tmp_path, config, kind, loss_names, teacher_calls,
                                     reaches):
    cfg = Config.fromfile(config_path(config))
    options, ckpt = tiny_run_options(cfg, tmp_path, kind)
    record = train_recorded(cfg, str(tmp_path / 'work'), options, count=tuple(teacher_calls))
    runner, calls = record.runner, record.calls
    logged = runner.message_hub.log_scalars
    for name in loss_names:
        value = logged[f'train/{name}'].current()
        # at 64 px GFL's P6 and P7 are 1x1 maps: one position, a distribution equal to 1 on
        # both sides, so their CWD is exactly 0
        one_position = name in ('loss_cls_p6', 'loss_cls_p7')
        assert math.isfinite(value) and (value == 0 if one_position else value > 0), (name,
                                                                                       value)
    assert not [k for k in logged if k.startswith('train/loss_') and
                k[len('train/'):] not in loss_names]
    assert any(key.startswith('train/student.') for key in logged)  # the task loss is on
    assert calls == teacher_calls
    assert_teacher_unchanged(runner.model.teacher, ckpt)
    moved = record.moved('student')
    assert any(name.startswith(reaches[0]) for name in moved), moved
    distill_gradient_reaches(runner, reaches)
    # the student's weights load strictly into the stock model of the config it names
    stock = build_model_from_cfg(dict(cfg.model.architecture, pretrained=False), 'student')
    stock.load_state_dict(student_state_dict(runner.model.state_dict()), strict=True)
    assert type(stock).__name__ == type(runner.model.student).__name__
