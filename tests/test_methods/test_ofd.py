"""OFD end to end: the algorithm's losses against a hand computation, empirical margins measured
by the algorithm, and real training runs of the cls/det/seg/digits configs (the margin ReLU and
the loss alone: tests/test_models/test_connectors/test_ofd_connector.py, test_ofd_loss.py)."""
import math

import pytest
import torch
from mmengine.config import Config

from data_factory import cls_data_options, make_classification_dataset
from helpers import (assert_teacher_unchanged, config_path, digits_options, save_checkpoint_of,
                     tiny_classifier, tiny_run_options, train, train_recorded)
from mmkd.models import OFDTeacherConnector
from ofd_helpers import (TEACHER, batch, build_ofd, manual_pre_relu_features, ofd_taps,
                         reference_margin, save_trained_looking_teacher)


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_trained_looking_teacher(TEACHER,
                                        str(tmp_path_factory.mktemp('ofd') / 'teacher.pth'))


# -- the algorithm against a hand computation -------------------------------------------------
@pytest.mark.parametrize('norm_mode', ['train', 'eval'])
def test_algorithm_loss_equals_the_hand_computed_ofd_loss(teacher_ckpt, norm_mode):
    student = tiny_classifier(width=8)  # the teacher's architecture, its own random weights
    algorithm = build_ofd(teacher_ckpt, student=student, teacher_norm_mode=norm_mode,
                          tap_pairs=ofd_taps(student_connector=False)).train()
    inputs, samples = batch()
    losses = algorithm.loss(inputs, samples)
    with torch.no_grad():
        student_features = manual_pre_relu_features(algorithm.student, inputs)
        teacher_features = manual_pre_relu_features(algorithm.teacher, inputs)
    for i, (s, t) in enumerate(zip(student_features, teacher_features), start=1):
        bn = getattr(algorithm.teacher.backbone, f'layer{i}')[-1].norm2
        margin = torch.tensor([reference_margin(g, b) for g, b in
                               zip(bn.weight.tolist(), bn.bias.tolist())]).view(1, -1, 1, 1)
        t = torch.maximum(t, margin)
        keep = (s > t) | (t > 0)
        expected = ((s - t)**2 * keep).sum() / (4 * 1000) / 2**(4 - i)
        assert losses[f'loss_stage{i}'].item() == pytest.approx(expected.item(), rel=1e-5)
        assert expected > 0


def test_teacher_norm_mode_defaults_to_train_for_ofd(teacher_ckpt):
    algorithm = build_ofd(teacher_ckpt).train()
    assert algorithm.teacher_norm_mode == 'train'
    assert algorithm.teacher.backbone.layer1[0].bn1.training
    assert not algorithm.teacher.backbone.training


# -- empirical margins ------------------------------------------------------------------------
def test_empirical_margin_is_the_mean_negative_response_over_the_batches(teacher_ckpt):
    algorithm = build_ofd(teacher_ckpt, tap_pairs=ofd_taps(margin_source='empirical'))
    with pytest.raises(RuntimeError, match="custom_hooks=\\[dict\\(type='OFDMarginHook'\\)\\]"):
        algorithm.train().loss(*batch())
    batches = [dict(inputs=list(batch(seed=seed)[0].mul(50).add(100).byte()),
                    data_samples=batch()[1]) for seed in (2, 3)]
    with pytest.raises(KeyError, match=r"\['stage5_teacher'\] are not connectors with "
                       r"margin_source='empirical'; those are \['stage1_teacher', "):
        algorithm.measure_empirical_margins(batches, ['stage5_teacher'])
    assert algorithm.measure_empirical_margins(batches) == 2
    algorithm.train()
    features = [[], [], [], []]
    with torch.no_grad():
        for data in batches:
            inputs = algorithm.data_preprocessor(data, True)['inputs']
            for i, f in enumerate(manual_pre_relu_features(algorithm.teacher, inputs)):
                features[i].append(f.transpose(0, 1).flatten(1))
    for i, chunks in enumerate(features, start=1):
        values = torch.cat(chunks, dim=1).double()
        negative = values < 0
        expected = (values * negative).sum(1) / negative.sum(1).clamp(min=1)
        margin = algorithm.distiller.connectors[f'stage{i}_teacher'].margin.flatten()
        torch.testing.assert_close(margin, expected.float(), rtol=1e-4, atol=1e-6)
        assert (margin < 0).any()


# -- training runs of the configs --------------------------------------------------------------
def distill_losses(runner):
    return {k[len('train/'):]: v for k, v in runner.message_hub.log_scalars.items()
            if k.startswith('train/loss_stage')}


def assert_distill_losses_logged_and_finite(runner, stages=(1, 2, 3, 4)):
    losses = distill_losses(runner)
    assert set(losses) == {f'loss_stage{i}' for i in stages}
    assert all(math.isfinite(v.current()) and v.current() > 0 for v in losses.values())


def digits_with_empirical_margins(num_batches=2):
    cfg = Config.fromfile(config_path('digits/ofd_resnet18_w32_w4.py'))
    for pair in cfg.model.distiller.tap_pairs:
        pair.teacher_connector.margin_source = 'empirical'
    cfg.custom_hooks = [dict(type='OFDMarginHook', num_batches=num_batches)]
    return cfg


def test_margin_hook_asks_for_the_ofd_algorithm_which_measures_the_margins(tmp_path):
    cfg = digits_with_empirical_margins()
    cfg.model.type = 'SingleTeacherDistill'
    teacher_ckpt = save_checkpoint_of(dict(cfg_path='mmkd::digits/teacher_resnet18_w32.py'),
                                      str(tmp_path / 'teacher.pth'))
    # mmengine's runner re-raises a hook's TypeError as a plain TypeError, message kept
    with pytest.raises(TypeError, match="got SingleTeacherDistill; set model.type="
                       "'OverhaulFeatureDistillation'"):
        train(cfg, str(tmp_path / 'work'), dict(digits_options(),
                                                **{'model.teacher_ckpt': teacher_ckpt}))


def test_digits_config_trains_with_empirical_margins(tmp_path):
    teacher_ckpt = save_trained_looking_teacher(
        dict(cfg_path='mmkd::digits/teacher_resnet18_w32.py'), str(tmp_path / 'teacher.pth'))
    cfg = digits_with_empirical_margins()
    runner = train(cfg, str(tmp_path / 'work'), dict(digits_options(epochs=2),
                                                     **{'model.teacher_ckpt': teacher_ckpt}))
    assert_distill_losses_logged_and_finite(runner)
    total = [sum(values) for values in zip(*(
        runner.message_hub.get_scalar(f'train/{name}').data[0] for name in
        distill_losses(runner)))]
    assert total[-1] < total[0]  # the distillation loss goes down
    assert_teacher_unchanged(runner.model.teacher, teacher_ckpt)
    margins = [c.margin for c in runner.model.distiller.connectors.values()
               if isinstance(c, OFDTeacherConnector)]
    assert len(margins) == 4 and all(bool(m.lt(0).any()) for m in margins)


@pytest.mark.parametrize('config,backbone', [
    ('ofd/ofd_resnet50_resnet18_8xb32_in1k.py', 'ResNet'),
    ('ofd/ofd_resnet50_resnet18_8xb16_cifar100.py', 'ResNet_CIFAR'),
])
def test_classification_configs_train_one_iteration(tmp_path, config, backbone):
    cfg = Config.fromfile(config_path(config))
    teacher = dict(cfg.model.teacher, pretrained=False)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    info = make_classification_dataset(tmp_path / 'data', image_size=(32, 32))
    options = cls_data_options(info, max_iters=1, save_checkpoint=False)
    options.update({'model.teacher.pretrained': False, 'model.teacher_ckpt': ckpt,
                    'model.dry_run_shape': (3, 32, 32)})
    runner = train(cfg, str(tmp_path / 'work'), options)
    assert_distill_losses_logged_and_finite(runner)
    assert_teacher_unchanged(runner.model.teacher, ckpt)
    teacher_backbone = runner.model.teacher.backbone
    assert type(teacher_backbone).__name__ == backbone and teacher_backbone.depth == 50
    assert type(runner.model.student.backbone).__name__ == backbone


@pytest.mark.parametrize('config,heads', [
    ('ofd/ofd_retinanet_r101_r50_fpn_1x_coco.py', ('neck', 'bbox_head')),
    ('ofd/ofd_faster-rcnn_r101_r50_fpn_1x_coco.py', ('neck', 'rpn_head', 'roi_head')),
])
def test_detection_configs_train_without_running_the_teacher_heads(tmp_path, config, heads):
    cfg = Config.fromfile(config_path(config))
    options, ckpt = tiny_run_options(cfg, tmp_path, 'det')
    record = train_recorded(cfg, str(tmp_path / 'work'), options,
                            count=('backbone.layer4', ) + heads)
    runner, calls = record.runner, record.calls
    assert calls == dict({'backbone.layer4': 1}, **{head: 0 for head in heads})
    assert_distill_losses_logged_and_finite(runner)
    assert_teacher_unchanged(runner.model.teacher, ckpt)
    assert runner.model.teacher.backbone.depth == 101


def test_segmentation_config_trains_one_iteration(tmp_path):
    cfg = Config.fromfile(config_path(
        'ofd/ofd_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py'))
    options, ckpt = tiny_run_options(cfg, tmp_path, 'seg')
    # mmseg calls decode_head.forward directly, which module hooks do not see: count the
    # heads' layers
    heads = ('decode_head.conv_seg', 'auxiliary_head.conv_seg')
    record = train_recorded(cfg, str(tmp_path / 'work'), options,
                            count=('backbone.layer4', ) + heads)
    runner, calls = record.runner, record.calls
    assert calls == dict({'backbone.layer4': 1}, **{head: 0 for head in heads})
    assert_distill_losses_logged_and_finite(runner)
    assert_teacher_unchanged(runner.model.teacher, ckpt)
