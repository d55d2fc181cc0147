"""SingleTeacherDistill and ConfigurableDistiller on real mmpretrain models."""
import copy
import gc
import pickle

import pytest
import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample

from helpers import config_path, digits_options, save_checkpoint_of, tiny_classifier, train
from mmkd.registry import MODELS

STUDENT = tiny_classifier(width=4)
TEACHER = tiny_classifier(width=8)


def build_algorithm(teacher_ckpt, tap_pairs=None, **kwargs):
    tap_pairs = tap_pairs or [
        dict(name='logits', student='head.fc', loss=dict(type='KDLoss', tau=4)),
        dict(name='stage4', student='backbone.layer4', recorder='PreReLU',
             student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss')),
    ]
    cfg = dict(type='SingleTeacherDistill', architecture=copy.deepcopy(STUDENT),
               teacher=copy.deepcopy(TEACHER), teacher_ckpt=teacher_ckpt,
               dry_run_shape=(3, 32, 32),
               distiller=dict(type='ConfigurableDistiller', tap_pairs=tap_pairs))
    cfg.update(kwargs)
    return MODELS.build(cfg)


@pytest.fixture
def teacher_ckpt(tmp_path):
    return save_checkpoint_of(TEACHER, str(tmp_path / 'teacher.pth'))


def batch(size=4):
    torch.manual_seed(1)
    return torch.randn(size, 3, 32, 32), [DataSample().set_gt_label(i % 10) for i in range(size)]


def count_calls(module):
    """Calls of ``module`` (counted when they start)."""
    calls = []
    module.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


def test_loss_mode_returns_student_and_distill_losses(teacher_ckpt):
    algorithm = build_algorithm(teacher_ckpt).train()
    losses = algorithm(*batch(), mode='loss')
    assert set(losses) == {'student.loss', 'loss_logits', 'loss_stage4'}
    assert all(torch.isfinite(v) for v in losses.values())
    # the dry run filled the connector's channels: student 32 -> teacher 64
    conv = algorithm.distiller.connectors['stage4_student'].conv
    assert (conv.in_channels, conv.out_channels) == (32, 64)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in algorithm.teacher.parameters())
    assert conv.weight.grad is not None


def test_teacher_stops_after_its_taps_and_predict_runs_the_student_only(teacher_ckpt):
    tap = [dict(name='stage3', student='backbone.layer3', recorder='PreReLU',
                student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss'))]
    algorithm = build_algorithm(teacher_ckpt, tap_pairs=tap).train()
    teacher_layer4 = count_calls(algorithm.teacher.backbone.layer4)
    teacher_head = count_calls(algorithm.teacher.head)
    teacher_layer3 = count_calls(algorithm.teacher.backbone.layer3)
    algorithm(*batch(), mode='loss')
    assert len(teacher_layer3) == 1 and not teacher_layer4 and not teacher_head
    algorithm.eval()
    predictions = algorithm(*batch(), mode='predict')
    assert len(predictions) == 4 and len(teacher_layer3) == 1


def test_teacher_does_not_run_when_distillation_is_off(teacher_ckpt):
    algorithm = build_algorithm(teacher_ckpt).train()
    teacher_calls = count_calls(algorithm.teacher.backbone)
    algorithm.distillation_enabled = False
    losses = algorithm(*batch(), mode='loss')
    assert set(losses) == {'student.loss'} and not teacher_calls


def test_teacher_norm_mode_train_uses_batch_statistics_without_updating_them(teacher_ckpt):
    algorithm = build_algorithm(teacher_ckpt, teacher_norm_mode='train').train()
    bn = algorithm.teacher.backbone.bn1
    assert bn.training and not algorithm.teacher.head.training
    before = copy.deepcopy(algorithm.teacher.state_dict())
    algorithm(*batch(), mode='loss')
    after = algorithm.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    algorithm.eval()
    assert not bn.training


def test_optimizer_gets_no_teacher_parameters(teacher_ckpt):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    algorithm = build_algorithm(teacher_ckpt)
    with DefaultScope.overwrite_default_scope('mmkd'):
        wrapper = build_optim_wrapper(algorithm, dict(optimizer=dict(type='SGD', lr=0.1)))
    optimized = {id(p) for group in wrapper.optimizer.param_groups for p in group['params']}
    assert not optimized & {id(p) for p in algorithm.teacher.parameters()}
    assert {id(p) for p in algorithm.student.parameters()} <= optimized
    assert {id(p) for p in algorithm.distiller.parameters()} <= optimized


def test_hooks_are_removed_when_the_algorithm_is_deleted(teacher_ckpt):
    algorithm = build_algorithm(teacher_ckpt)
    student = algorithm.student
    assert any(m._forward_hooks for m in student.modules())
    del algorithm
    gc.collect()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in student.modules())


def test_shape_mismatch_names_both_shapes_and_the_connector(teacher_ckpt):
    tap = [dict(name='stage4', student='backbone.layer4', recorder='PreReLU',
                loss=dict(type='FitNetsLoss'))]
    with pytest.raises(ValueError, match=r"\(2, 32, 1, 1\).*\(2, 64, 1, 1\).*ConvBNConnector"):
        build_algorithm(teacher_ckpt, tap_pairs=tap)


def test_unknown_layer_lists_close_matches(teacher_ckpt):
    tap = [dict(name='stage4', student='backbone.layer44', loss=dict(type='FitNetsLoss'))]
    with pytest.raises(KeyError, match=r"backbone.layer4"):
        build_algorithm(teacher_ckpt, tap_pairs=tap)


def test_mapping_to_an_unknown_loss_argument_lists_valid_ones(teacher_ckpt):
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
        teacher_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(loss_kd=dict(type='KDLoss')),
        loss_forward_mappings=dict(loss_kd=dict(
            student=dict(recorder='logits', from_student=True),
            preds_T=dict(recorder='logits', from_student=False))))
    with pytest.raises(KeyError, match=r"'preds_T'.*\['student', 'teacher'\]"):
        build_algorithm(teacher_ckpt, distiller=distiller)
    distiller['loss_forward_mappings']['loss_kd'].pop('preds_T')
    with pytest.raises(KeyError, match=r"lacks \['teacher'\]"):
        build_algorithm(teacher_ckpt, distiller=distiller)
    distiller['distill_losses'] = dict(kd=dict(type='KDLoss'))
    with pytest.raises(ValueError, match='must contain "loss"'):
        build_algorithm(teacher_ckpt, distiller=distiller)


def test_missing_or_mismatched_teacher_checkpoint(tmp_path, teacher_ckpt):
    missing = str(tmp_path / 'nowhere' / 'teacher.pth')
    with pytest.raises(FileNotFoundError, match='nowhere/teacher.pth'):
        build_algorithm(missing)
    other = save_checkpoint_of(tiny_classifier(width=4), str(tmp_path / 'other.pth'))
    with pytest.raises(KeyError, match='does not match the teacher'):
        build_algorithm(other)
    with pytest.raises(ValueError, match='teacher_ckpt'):
        build_algorithm(None)


class Payload:
    """An arbitrary Python object pickled into a checkpoint."""


def test_pickled_teacher_checkpoint_is_refused_unless_trusted(tmp_path, teacher_ckpt):
    state = torch.load(teacher_ckpt, weights_only=True)
    state['meta'] = Payload()
    legacy = str(tmp_path / 'legacy.pth')
    torch.save(state, legacy)
    with pytest.raises(pickle.UnpicklingError, match='trust_teacher_ckpt=True'):
        build_algorithm(legacy)
    algorithm = build_algorithm(legacy, trust_teacher_ckpt=True)
    torch.testing.assert_close(algorithm.teacher.state_dict(), state['state_dict'])


def test_end_to_end_kd_on_digits_lowers_the_loss_moves_the_student_not_the_teacher(tmp_path):
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    teacher_ckpt = save_checkpoint_of(teacher_cfg.model.to_dict(), str(tmp_path / 'teacher.pth'))
    cfg = Config.fromfile(config_path('digits/kd_resnet18_w32_w4.py'))
    cfg.model.teacher_ckpt = teacher_ckpt
    cfg.model.distiller.tap_pairs.append(
        dict(name='stage3', student='backbone.layer3', recorder='PreReLU',
             student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss')))
    algorithm_before = MODELS.build(copy.deepcopy(cfg.model))
    runner = train(cfg, str(tmp_path / 'work'), digits_options(epochs=6, val_interval=6))
    model = runner.model
    teacher_before = torch.load(teacher_ckpt, weights_only=True)['state_dict']
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f'teacher changed: {key}'
    moved = [k for k, v in model.student.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, algorithm_before.student.state_dict()[k])]
    assert len(moved) > 10
    history = runner.message_hub.get_scalar('train/loss_stage3').data[0]
    assert history[-3:].mean() < history[:3].mean()
    assert 'train/loss_kd' in runner.message_hub.log_scalars
