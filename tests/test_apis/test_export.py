"""tools/export_student.py: the student of a distillation checkpoint loads strictly into the
stock mmpretrain/mmdet/mmseg model, and evaluates exactly as inside the distillation model."""
import copy
import os
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from helpers import (config_path, digits_options, run_tool, save_checkpoint_of, tiny_classifier,
                     train)
from mmkd.apis.export import check_student_checkpoint, export_student
from mmkd.apis.test import build_test_runner
from mmkd.models import build_model_from_cfg
from mmkd.models.algorithms.checkpoint_layout import STUDENT_META_KEYS, student_state_dict
from mmkd.registry import MODELS
from mmkd.utils.errors import CheckpointMismatchError

BN = dict(type='BN', requires_grad=True)
STUDENTS = {
    'mmpretrain': lambda w: tiny_classifier(width=w),
    'mmdet': lambda w: dict(
        cfg_path='mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
        backbone=dict(base_channels=w, stem_channels=w),
        neck=dict(in_channels=[w, 2 * w, 4 * w, 8 * w], out_channels=16),
        bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1, num_classes=3)),
    'mmseg': lambda w: dict(
        cfg_path='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
        data_preprocessor=dict(size=None),
        backbone=dict(stem_channels=w, base_channels=w, norm_cfg=BN),
        decode_head=dict(in_channels=8 * w, channels=8, num_classes=3, norm_cfg=BN),
        auxiliary_head=dict(in_channels=4 * w, channels=8, num_classes=3, norm_cfg=BN)),
}


def run_export(argv, capsys):
    run_tool('tools/export_student.py', argv)
    return capsys.readouterr().out


@pytest.mark.parametrize('package', list(STUDENTS))
def test_exported_student_loads_strictly_into_the_stock_model(package, tmp_path, capsys):
    teacher_cfg = STUDENTS[package](16)
    algorithm_cfg = dict(
        type='SingleTeacherDistill',
        architecture=STUDENTS[package](8),
        teacher=teacher_cfg,
        teacher_ckpt=save_checkpoint_of(teacher_cfg, str(tmp_path / 'teacher.pth')),
        dry_run_shape=(3, 64, 64),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
            name='hint', student='backbone.layer2', recorder='PreReLU',
            student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss'))]))
    torch.manual_seed(1)
    algorithm = MODELS.build(copy.deepcopy(algorithm_cfg))
    algorithm.init_weights()
    distill_ckpt = tmp_path / 'distill.pth'
    torch.save({'state_dict': algorithm.state_dict(), 'meta': {'epoch': 3}}, distill_ckpt)
    config = tmp_path / 'distill_config.py'
    Config(dict(model=algorithm_cfg)).dump(str(config))

    out = run_export([distill_ckpt, tmp_path / 'student.pth', '--config', config], capsys)
    assert '0 missing, 0 unexpected keys' in out
    exported = torch.load(tmp_path / 'student.pth', weights_only=True)
    assert exported['meta']['epoch'] == 3 and exported['meta']['exported_from_distillation']
    assert not any(k.startswith(('teacher.', 'distiller.', 'student.'))
                   for k in exported['state_dict'])
    stock = build_model_from_cfg(STUDENTS[package](8), 'student')  # as the student config builds
    load_checkpoint(stock, str(tmp_path / 'student.pth'), strict=True)
    torch.testing.assert_close(stock.state_dict(), algorithm.student.state_dict(), rtol=0, atol=0)


def test_digits_round_trip_and_student_checkpoint_hook(tmp_path, capsys):
    """A real KD run; tools/test.py's path on the stock student config with the exported
    checkpoint predicts exactly what the distillation checkpoint's student predicts."""
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    teacher_ckpt = save_checkpoint_of(teacher_cfg.model.to_dict(), str(tmp_path / 'teacher.pth'))
    kd_config = config_path('digits/kd_resnet18_w32_w4.py')
    options = dict(digits_options(epochs=2, val_interval=2),
                   custom_hooks=[dict(type='mmkd.StudentCheckpointHook', interval=1)])
    options['model.teacher_ckpt'] = teacher_ckpt
    work = tmp_path / 'kd'
    train(kd_config, str(work), options)
    distill_ckpt = work / 'epoch_2.pth'
    exported = tmp_path / 'student.pth'
    run_export([distill_ckpt, exported, '--config', config_path('digits/student_resnet18_w4.py')],
               capsys)

    def predictions(config, checkpoint, name, cfg_options=None):
        dump = tmp_path / f'{name}.pkl'
        runner = build_test_runner(config, str(checkpoint), work_dir=str(tmp_path / name),
                                   out=str(dump), cfg_options=cfg_options)
        top1 = runner.test()['accuracy/top1']
        with open(dump, 'rb') as file:
            scores = torch.stack([torch.as_tensor(s['pred_score']) for s in pickle.load(file)])
        return top1, scores

    top1_distill, scores_distill = predictions(kd_config, distill_ckpt, 'distill',
                                               {'model.teacher_ckpt': teacher_ckpt})
    top1_student, scores_student = predictions(config_path('digits/student_resnet18_w4.py'),
                                               exported, 'student')
    assert top1_student == top1_distill
    assert len(scores_student) == 359
    torch.testing.assert_close(scores_student, scores_distill, rtol=0, atol=0)
    untrained = build_model_from_cfg(dict(cfg_path='mmkd::digits/student_resnet18_w4.py'))
    assert not torch.equal(untrained.state_dict()['head.fc.weight'],
                           torch.load(exported, weights_only=True)['state_dict']['head.fc.weight'])

    # the hook's student-only checkpoints: one per epoch and the last, same weights as exported
    assert {'student_epoch_1.pth', 'student_epoch_2.pth', 'student_last.pth'} <= set(
        os.listdir(work))
    check_student_checkpoint(config_path('digits/student_resnet18_w4.py'),
                             str(work / 'student_last.pth'))
    hook_state = torch.load(work / 'student_last.pth', weights_only=True)['state_dict']
    torch.testing.assert_close(hook_state, torch.load(exported, weights_only=True)['state_dict'],
                               rtol=0, atol=0)
    # one layout: the hook's file and the export of the run's checkpoint after the same epoch
    # carry the same meta (only the time of writing differs)
    hook_meta = torch.load(work / 'student_epoch_2.pth', weights_only=True)['meta']
    export_meta = torch.load(exported, weights_only=True)['meta']
    assert set(hook_meta) == set(export_meta) == {*STUDENT_META_KEYS, 'exported_from_distillation'}
    assert {k: v for k, v in hook_meta.items() if k != 'time'} == {
        k: v for k, v in export_meta.items() if k != 'time'}
    assert hook_meta['epoch'] == 2 and 'teacher_ckpt' in hook_meta['cfg']  # the KD run's


def test_export_reads_mmrazor_keys_and_refuses_other_checkpoints(tmp_path, capsys):
    state = {'architecture.backbone.conv1.weight': torch.ones(1),
             'teacher.backbone.conv1.weight': torch.zeros(1)}
    assert list(student_state_dict(state)) == ['backbone.conv1.weight']
    plain = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'backbone.conv1.weight': torch.ones(1)}}, plain)
    with pytest.raises(KeyError, match='not the checkpoint of a distillation algorithm'):
        run_export([plain, tmp_path / 'out.pth'], capsys)
    with pytest.raises(FileExistsError, match='is the distillation checkpoint'):
        export_student(str(plain), str(plain))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        run_export([tmp_path / 'missing.pth', tmp_path / 'out.pth'], capsys)


def test_export_check_names_the_keys_of_another_shape(tmp_path, capsys):
    """--config compares shapes too: the report names the keys, not a torch size error."""
    teacher = Config.fromfile(config_path('digits/teacher_resnet18_w32.py')).model.to_dict()
    state = torch.load(save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth')),
                       weights_only=True)['state_dict']
    distill_ckpt = tmp_path / 'distill.pth'  # a distillation checkpoint whose student is w32
    torch.save({'state_dict': {f'student.{k}': v for k, v in state.items()}}, distill_ckpt)
    with pytest.raises(CheckpointMismatchError, match=(
            r'does not load strictly into the student of .*student_resnet18_w4\.py: missing '
            r'keys: 0; unexpected keys: 0; keys of another shape \(checkpoint vs model\): \d+ '
            r"\(e\.g\. \['backbone\.conv1\.weight: \(32, 3, \d+, \d+\) vs \(4, 3")):
        run_export([distill_ckpt, tmp_path / 'student.pth', '--config',
                    config_path('digits/student_resnet18_w4.py')], capsys)


def test_student_checkpoint_hook_refuses_a_plain_model(tmp_path):
    options = dict(digits_options(epochs=1),
                   custom_hooks=[dict(type='mmkd.StudentCheckpointHook')])
    with pytest.raises(TypeError, match='remove the hook'):
        train(config_path('digits/student_resnet18_w4.py'), str(tmp_path), options)
