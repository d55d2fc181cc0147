"""The KD and FitNets configs for classification, detection and segmentation: one training
iteration each on tiny real data through tools/train.py's code path. (Pixel-wise KD against a
hand computation: tests/test_models/test_losses/test_kd_fitnets_losses.py.)"""
import math

import pytest
from mmengine.config import Config

from helpers import assert_teacher_unchanged, config_path, tiny_run_options, train_recorded


# teacher_calls: calls of teacher modules in the iteration (the teacher runs as far as its tap,
# no further; mmseg calls decode_head.forward directly, so its layers are counted). moves: the
# student modules the distillation loss reaches.
@pytest.mark.parametrize('config,kind,loss_name,teacher_calls,moves', [
    ('kd/kd_resnet34_resnet18_8xb32_in1k.py', 'cls', 'loss_kd',
     {'backbone': 1, 'head': 1}, 'head.fc.'),
    ('fitnets/fitnets_resnet50_resnet18_8xb32_in1k.py', 'cls', 'loss_hint',
     {'backbone.layer2': 1, 'backbone.layer3': 0, 'head': 0}, 'backbone.layer2.'),
    ('fitnets/fitnets_retinanet_r101_r50_fpn_1x_coco.py', 'det', 'loss_hint',
     {'backbone.layer2': 1, 'backbone.layer3': 0, 'neck': 0, 'bbox_head': 0},
     'backbone.layer2.'),
    ('kd/kd_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'seg', 'loss_pixel_kd',
     {'decode_head.conv_seg': 1, 'auxiliary_head.conv_seg': 0}, 'decode_head.conv_seg.'),
    ('fitnets/fitnets_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'seg',
     'loss_hint', {'backbone.layer2': 1, 'backbone.layer3': 0, 'decode_head.conv_seg': 0},
     'backbone.layer2.'),
], ids=['kd-cls', 'fitnets-cls', 'fitnets-det', 'kd-seg', 'fitnets-seg'])
def test_baseline_configs_train_one_iteration(tmp_path, config, kind, loss_name, teacher_calls,
                                              moves):
    cfg = Config.fromfile(config_path(config))
    options, ckpt = tiny_run_options(cfg, tmp_path, kind)
    record = train_recorded(cfg, str(tmp_path / 'work'), options, count=tuple(teacher_calls))
    runner, calls = record.runner, record.calls
    logged = runner.message_hub.log_scalars
    loss = logged[f'train/{loss_name}'].current()
    assert math.isfinite(loss) and loss > 0
    assert any(key.startswith('train/student.') for key in logged)  # the task loss is on
    assert_teacher_unchanged(runner.model.teacher, ckpt)
    assert calls == teacher_calls
    moved = record.moved('student')
    assert any(name.startswith(moves) for name in moved), moved
    if loss_name == 'loss_hint':  # the regressor learns
        moved = record.moved('distiller')
        assert 'connectors.hint_student.conv.weight' in moved, moved
