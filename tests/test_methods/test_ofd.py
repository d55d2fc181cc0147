"""OFD: margin ReLU connector, partial L2 loss, the algorithm against a hand computation, BN
discovery, empirical margins, and real training runs of the cls/det/seg/digits configs."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.structures import DataSample

from data_factory import (cls_data_options, det_data_options, make_classification_dataset,
                          make_coco_detection, make_segmentation_dataset, seg_data_options)
from helpers import (assert_teacher_unchanged, config_path, digits_options, save_checkpoint_of,
                     tiny_classifier, train, train_recorded)
from mmkd.engine import measure_empirical_margins
from mmkd.models import OFDLoss, OFDTeacherConnector, build_model_from_cfg, gaussian_margin
from mmkd.registry import MODELS

TEACHER = tiny_classifier(width=8)


def reference_margin(gamma: float, beta: float) -> float:
    """The official formula, written out per channel with math.erf."""
    s, m = abs(gamma), beta
    tail = 0.5 * (1 + math.erf(-m / s / math.sqrt(2)))
    if tail > 0.001:
        return m - s * math.exp(-(m / s)**2 / 2) / math.sqrt(2 * math.pi) / tail
    return -3 * s


def ofd_taps(stages=(1, 2, 3, 4), student_connector=True, divisor=1000.0, **teacher_connector):
    return [dict(name=f'stage{i}', student=f'backbone.layer{i}', recorder='PreReLU',
                 student_connector=dict(type='ConvBNConnector') if student_connector else None,
                 teacher_connector=dict(type='OFDTeacherConnector', **teacher_connector),
                 loss=dict(type='OFDLoss', divisor=divisor, loss_weight=1 / 2**(4 - i)))
            for i in stages]


def build_ofd(teacher_ckpt, student=None, teacher=TEACHER, tap_pairs=None, **kwargs):
    cfg = dict(type='OverhaulFeatureDistillation',
               architecture=copy.deepcopy(student or tiny_classifier(width=4)),
               teacher=copy.deepcopy(teacher), teacher_ckpt=teacher_ckpt,
               dry_run_shape=(3, 32, 32),
               distiller=dict(type='ConfigurableDistiller', tap_pairs=tap_pairs or ofd_taps()))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def batch(size=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, 3, 32, 32, generator=generator)
    return inputs, [DataSample().set_gt_label(i % 10) for i in range(size)]


def save_trained_looking_teacher(cfg, path, seed=0):
    """Save ``cfg``'s model with random BN affine parameters and statistics, as a trained
    teacher has (mmpretrain's init zeroes the last BN of each residual block)."""
    torch.manual_seed(seed)
    model = build_model_from_cfg(copy.deepcopy(cfg), 'teacher')
    model.init_weights()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            sign = torch.randint(0, 2, (channels, )) * 2 - 1
            module.weight.data = sign * torch.empty(channels).uniform_(0.3, 1.5)
            module.bias.data = torch.randn(channels)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    torch.save({'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_trained_looking_teacher(TEACHER,
                                        str(tmp_path_factory.mktemp('ofd') / 'teacher.pth'))


# -- the margin ------------------------------------------------------------------------------
def test_margin_follows_the_official_formula_and_survives_a_checkpoint(tmp_path):
    # hand-set gamma/beta on the BN that ends the teacher's last stage: both branches
    gammas = [1.0, -2.0, 0.5, 1.5, -1.0, 0.25, 2.0, 1.0]
    betas = [0.0, 1.0, 3.0, -1.0, 4.0, -0.5, 7.0, 3.2]
    teacher = build_model_from_cfg(copy.deepcopy(TEACHER), 'teacher')
    bn = teacher.backbone.layer4[1].bn2
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gammas).repeat(8))
        bn.bias.copy_(torch.tensor(betas).repeat(8))
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    algorithm = build_ofd(ckpt, tap_pairs=ofd_taps(stages=(4, )))
    connector = algorithm.distiller.connectors['stage4_teacher']
    expected = torch.tensor([reference_margin(g, b) for g, b in zip(gammas, betas)]).repeat(8)
    assert connector.margin_bn == 'backbone.layer4.1.bn2'
    assert connector.margin.shape == (1, 64, 1, 1)
    torch.testing.assert_close(connector.margin.flatten(), expected)
    # channels 2 (m/s = 6), 4, 6 and 7 take the -3s branch, the others the Gaussian one
    assert torch.allclose(connector.margin.flatten()[[2, 4, 6, 7]],
                          torch.tensor([-1.5, -3.0, -6.0, -3.0]))
    assert expected[0] == pytest.approx(-math.sqrt(2 / math.pi))
    # gamma = 0 (a constant channel): its value if negative, else 0; no BN affine: N(0, 1)
    torch.testing.assert_close(
        gaussian_margin(torch.zeros(3), torch.tensor([-1.0, 0.0, 2.0]), 3),
        torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))
    assert gaussian_margin(None, None, 1).item() == pytest.approx(reference_margin(1.0, 0.0))

    path = str(tmp_path / 'algorithm.pth')
    torch.save(algorithm.state_dict(), path)
    prefix = 'distiller.connectors.stage4_teacher.'
    state = {k[len(prefix):]: v for k, v in torch.load(path, weights_only=True).items()
             if k.startswith(prefix)}
    assert set(state) == {'margin', 'margin_ready'}
    fresh = OFDTeacherConnector(in_channels=64)
    with pytest.raises(RuntimeError, match='no margin yet.*enable the dry run'):
        fresh(torch.zeros(1, 64, 2, 2))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.margin, connector.margin)
    feature = torch.full((1, 64, 2, 2), -10.0)
    assert torch.equal(fresh(feature), connector.margin.expand(1, 64, 2, 2))


# -- the loss --------------------------------------------------------------------------------
def test_ofd_loss_matches_a_hand_computation_over_the_four_sign_cases():
    # (S, T): T > 0 with S above / below it, T < 0 with S above it, S <= T <= 0 (skipped)
    pairs = [(2.0, 1.0), (-1.0, 3.0), (0.5, -2.0), (-3.0, -1.0), (-1.0, 0.0), (-0.2, -0.5)]
    student = torch.tensor([s for s, _ in pairs]).reshape(2, 3, 1, 1).requires_grad_()
    teacher = torch.tensor([t for _, t in pairs]).reshape(2, 3, 1, 1)
    # 1^2 + 4^2 + 2.5^2 + 0 + 0 + 0.3^2 = 23.34, / batch 2 / divisor 1000 * weight 0.5
    loss = OFDLoss(loss_weight=0.5, divisor=1000)(student, teacher)
    assert loss.item() == pytest.approx(0.5 * 23.34 / (2 * 1000))
    loss.backward()
    assert student.grad.flatten()[[3, 4]].tolist() == [0.0, 0.0]
    assert (student.grad.flatten()[[0, 1, 2, 5]] != 0).all()
    with pytest.raises(ValueError, match='divisor'):
        OFDLoss(divisor=0)


# -- the algorithm against a hand computation -------------------------------------------------
def manual_pre_relu_features(classifier, inputs):
    """Each stage's output before its last ReLU, computed by hand from mmpretrain's modules."""
    backbone = classifier.backbone
    x = backbone.maxpool(backbone.relu(backbone.norm1(backbone.conv1(inputs))))
    features = []
    for name in backbone.res_layers:
        stage = getattr(backbone, name)
        for block in list(stage)[:-1]:
            x = block(x)
        last = stage[-1]
        identity = x if last.downsample is None else last.downsample(x)
        out = last.norm2(last.conv2(F.relu(last.norm1(last.conv1(x)))))
        features.append(out + identity)
        x = F.relu(features[-1])
    return features


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


# -- finding the BN of a tap -------------------------------------------------------------------
@pytest.mark.parametrize('depth,last_bn', [(18, 'bn2'), (50, 'bn3')])
def test_bn_discovery_on_basic_and_bottleneck_stages(tmp_path, depth, last_bn):
    teacher = tiny_classifier(width=4, depth=depth)
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    stem = dict(name='stem', student='backbone.conv1',
                recorder=dict(type='PreReLU', position='first_after'),
                student_connector=dict(type='ConvBNConnector'),
                teacher_connector=dict(type='OFDTeacherConnector'),
                loss=dict(type='OFDLoss'))
    algorithm = build_ofd(ckpt, teacher=teacher, tap_pairs=ofd_taps() + [stem])
    connectors = algorithm.distiller.connectors
    blocks = 2 if depth == 18 else [3, 4, 6, 3]
    for i in range(1, 5):
        last = blocks - 1 if depth == 18 else blocks[i - 1] - 1
        assert connectors[f'stage{i}_teacher'].margin_bn == f'backbone.layer{i}.{last}.{last_bn}'
    assert connectors['stem_teacher'].margin_bn == 'backbone.bn1'  # a BN right before a ReLU


def test_bn_discovery_fails_clearly_and_an_explicit_bn_works(teacher_ckpt):
    fixes = "bn='<teacher module name>'.*margin_source='empirical'"
    post_relu = [dict(name='out', student='backbone.layer4', loss=dict(type='OFDLoss'),
                      student_connector=dict(type='ConvBNConnector'),
                      teacher_connector=dict(type='OFDTeacherConnector'))]
    with pytest.raises(ValueError, match=f"after the ReLU.*recorder='PreReLU'.*{fixes}"):
        build_ofd(teacher_ckpt, tap_pairs=post_relu)
    logits = [dict(name='logits', student='head.fc', loss=dict(type='OFDLoss'),
                   teacher_connector=dict(type='OFDTeacherConnector'))]
    with pytest.raises(ValueError, match=f'no teacher BN produces.*{fixes}'):
        build_ofd(teacher_ckpt, tap_pairs=logits)
    post_relu[0]['teacher_connector']['bn'] = 'backbone.layer4.1.bn2'
    algorithm = build_ofd(teacher_ckpt, tap_pairs=post_relu)
    assert algorithm.distiller.connectors['out_teacher'].margin_bn == 'backbone.layer4.1.bn2'
    post_relu[0]['teacher_connector']['bn'] = 'backbone.layer4.1.conv2'
    with pytest.raises(ValueError, match='must be a BN layer'):
        build_ofd(teacher_ckpt, tap_pairs=post_relu)


# -- empirical margins ------------------------------------------------------------------------
def test_empirical_margin_is_the_mean_negative_response_over_the_batches(teacher_ckpt):
    algorithm = build_ofd(teacher_ckpt, tap_pairs=ofd_taps(margin_source='empirical'))
    with pytest.raises(RuntimeError, match="custom_hooks=\\[dict\\(type='OFDMarginHook'\\)\\]"):
        algorithm.train().loss(*batch())
    batches = [dict(inputs=list(batch(seed=seed)[0].mul(50).add(100).byte()),
                    data_samples=batch()[1]) for seed in (2, 3)]
    assert measure_empirical_margins(algorithm, batches) == 2
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


def test_digits_config_trains_with_empirical_margins(tmp_path):
    teacher_ckpt = save_trained_looking_teacher(
        dict(cfg_path='mmkd::digits/teacher_resnet18_w32.py'), str(tmp_path / 'teacher.pth'))
    cfg = Config.fromfile(config_path('digits/ofd_resnet18_w32_w4.py'))
    for pair in cfg.model.distiller.tap_pairs:
        pair.teacher_connector.margin_source = 'empirical'
    cfg.custom_hooks = [dict(type='OFDMarginHook', num_batches=2)]
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
    ckpt = save_checkpoint_of(dict(cfg.model.teacher, pretrained=False),
                              str(tmp_path / 'teacher.pth'))
    info = make_coco_detection(tmp_path / 'data', image_size=(64, 64))
    options = det_data_options(info, max_iters=1, save_checkpoint=False)
    options.update({'model.teacher.pretrained': False, 'model.teacher_ckpt': ckpt,
                    'model.architecture.backbone.init_cfg': None,
                    'model.dry_run_shape': (3, 64, 64)})
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
    ckpt = save_checkpoint_of(dict(cfg.model.teacher, pretrained=False),
                              str(tmp_path / 'teacher.pth'))
    info = make_segmentation_dataset(tmp_path / 'data', image_size=(64, 64))
    options = seg_data_options(info, max_iters=1, save_checkpoint=False)
    options.update({'model.teacher.pretrained': False, 'model.teacher_ckpt': ckpt,
                    'model.architecture.backbone.init_cfg': None,
                    'model.dry_run_shape': (3, 64, 64)})
    # mmseg calls decode_head.forward directly, which module hooks do not see: count the
    # heads' layers
    heads = ('decode_head.conv_seg', 'auxiliary_head.conv_seg')
    record = train_recorded(cfg, str(tmp_path / 'work'), options,
                            count=('backbone.layer4', ) + heads)
    runner, calls = record.runner, record.calls
    assert calls == dict({'backbone.layer4': 1}, **{head: 0 for head in heads})
    assert_distill_losses_logged_and_finite(runner)
    assert_teacher_unchanged(runner.model.teacher, ckpt)
