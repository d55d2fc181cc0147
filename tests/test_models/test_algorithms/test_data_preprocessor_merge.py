"""The student's data preprocessor, built through mmengine's Runner from configs on stock mmseg
and mmpretrain bases: stock < algorithm/top-level ``data_preprocessor`` < the ``architecture``
dict's own ``data_preprocessor``."""
import textwrap

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import save_checkpoint_of, tiny_classifier

SEG_BASE = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'
CLS_BASE = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
BN = dict(type='BN', requires_grad=True)
HINT = [dict(name='hint', student='backbone.layer2', recorder='PreReLU',
             student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss'))]


def tiny_pspnet(width):
    return dict(cfg_path=SEG_BASE,
                backbone=dict(stem_channels=width, base_channels=width, norm_cfg=BN),
                decode_head=dict(in_channels=8 * width, channels=8, num_classes=3, norm_cfg=BN),
                auxiliary_head=dict(in_channels=4 * width, channels=8, num_classes=3,
                                    norm_cfg=BN))


def build_runner(tmp_path, base, body):
    """``Runner.from_cfg`` on a config file ``_base_ = [base]`` + ``body``, as tools/train.py
    builds it (the Runner injects the top-level ``data_preprocessor`` into ``model``)."""
    path = tmp_path / 'config.py'
    path.write_text(f'_base_ = [{base!r}]\n' + textwrap.dedent(body))
    cfg = Config.fromfile(str(path))
    cfg.work_dir = str(tmp_path / 'work')
    return Runner.from_cfg(cfg)


def values(tensor):
    return tensor.flatten().tolist()


def test_mmseg_architecture_override_wins_over_the_runner_injected_preprocessor(tmp_path):
    teacher = tiny_pspnet(16)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    student = dict(tiny_pspnet(8), data_preprocessor=dict(size=(128, 128), mean=[1., 2., 3.]))
    runner = build_runner(tmp_path, SEG_BASE, f'''
        data_preprocessor = dict(std=[2.0, 2.0, 2.0])  # merged into the base's top-level dict
        model = dict(
            _delete_=True, type='mmkd.SingleTeacherDistill',
            architecture={student!r},
            teacher={teacher!r}, teacher_ckpt={ckpt!r}, dry_run_shape=(3, 64, 64),
            distiller=dict(type='mmkd.ConfigurableDistiller', tap_pairs={HINT!r}))
        ''')
    preprocessor = runner.model.student.data_preprocessor
    assert runner.model.data_preprocessor is preprocessor
    assert preprocessor.size == (128, 128)  # the architecture's own, not the base's 512x1024
    assert values(preprocessor.mean) == [1., 2., 3.]  # the architecture's own
    assert values(preprocessor.std) == [2., 2., 2.]  # top-level, over the stock 58.4, 57.1, 57.4
    assert preprocessor.seg_pad_val == 255 and preprocessor.channel_conversion  # stock


def test_mmpretrain_architecture_override_wins_and_the_rest_is_merged(tmp_path):
    teacher = tiny_classifier(width=8)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    student = dict(cfg_path=CLS_BASE, backbone=dict(base_channels=4, stem_channels=4),
                   head=dict(in_channels=32, num_classes=10),
                   data_preprocessor=dict(mean=[0., 0., 0.], num_classes=10))
    runner = build_runner(tmp_path, CLS_BASE, f'''
        model = dict(
            _delete_=True, type='mmkd.SingleTeacherDistill',
            architecture={student!r},
            teacher={teacher!r}, teacher_ckpt={ckpt!r}, dry_run_shape=(3, 32, 32),
            distiller=dict(type='mmkd.ConfigurableDistiller', tap_pairs=[dict(
                name='kd', student='head.fc', loss=dict(type='mmkd.KDLoss', tau=4))]))
        ''')
    preprocessor = runner.model.data_preprocessor
    assert preprocessor is runner.model.student.data_preprocessor
    assert values(preprocessor.mean) == [0., 0., 0.]  # the architecture's own
    torch.testing.assert_close(preprocessor.std.flatten(),
                               torch.tensor([58.395, 57.12, 57.375]))  # top-level (= stock)
    assert preprocessor.to_rgb  # to_rgb=True of the top-level dict
    assert preprocessor.num_classes == 10
