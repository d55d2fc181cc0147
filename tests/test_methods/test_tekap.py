"""TeKAP: the logit and feature losses against hand computations drawing the same noise, N = 0
against KD, fresh noise at every step, composition with FitNets and OFD, and training runs of
the digits, mmpretrain and mmdet configs."""
import math

import pytest
import torch
from mmengine.config import Config

from data_factory import (cls_data_options, det_data_options, make_classification_dataset,
                          make_coco_detection)
from helpers import config_path, save_checkpoint_of, train_recorded
from mmkd.models.losses import (FitNetsLoss, KDLoss, OFDLoss, TeKAPFeatureLoss, TeKAPLoss,
                                perturbed_views)

# -- logit level -----------------------------------------------------------------------------


def hand_kl(student, teacher, tau):
    """KL(softmax(t / tau) || softmax(s / tau)) * tau^2 for one sample, with math only."""
    def softmax(values):
        exps = [math.exp(v / tau) for v in values]
        return [e / sum(exps) for e in exps]
    p_s, p_t = softmax(student), softmax(teacher)
    return sum(t * math.log(t / s) for t, s in zip(p_t, p_s)) * tau**2


def test_logit_loss_equals_a_hand_computation_drawing_the_same_noise():
    student = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
    teacher = [[3.0, 2.0, 1.0], [1.0, 0.0, 0.0]]
    num_views, a, lam, tau, weight = 2, 0.1, 0.8, 2.0, 0.5
    torch.manual_seed(3)
    noise = torch.randn(num_views, 2, 3).tolist()  # the draw TeKAPLoss makes
    expected = 0.0
    for b in range(2):
        term = hand_kl(student[b], teacher[b], tau)
        for i in range(num_views):
            view = [(1 - a) * t + a * e for t, e in zip(teacher[b], noise[i][b])]
            term += lam * hand_kl(student[b], view, tau)
        expected += weight * term / 2
    loss = TeKAPLoss(tau=tau, num_views=num_views, noise_weight=a, view_weight=lam,
                     loss_weight=weight)
    torch.manual_seed(3)
    assert loss(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(
        expected, rel=1e-6)
    normalized = TeKAPLoss(tau=tau, num_views=num_views, noise_weight=a, view_weight=lam,
                           loss_weight=weight, normalize=True)
    torch.manual_seed(3)  # the same draw: the official sum over 1 + N * lambda = 2.6
    assert normalized(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(
        expected / 2.6, rel=1e-6)


def test_zero_views_is_exactly_kd_and_no_gradient_reaches_the_teacher():
    torch.manual_seed(0)
    student = torch.randn(4, 10, requires_grad=True)
    teacher = torch.randn(4, 10, requires_grad=True)
    tekap = TeKAPLoss(tau=4, num_views=0, loss_weight=0.7)(student, teacher)
    assert torch.equal(tekap, KDLoss(tau=4, loss_weight=0.7)(student, teacher))
    TeKAPLoss()(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_each_step_draws_fresh_noise_reproducible_under_the_seed():
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    loss = TeKAPLoss()
    torch.manual_seed(7)
    first, second = loss(student, teacher), loss(student, teacher)
    assert first.item() != second.item()
    torch.manual_seed(7)
    assert torch.equal(loss(student, teacher), first)
    views = perturbed_views(teacher.double(), 3, 0.1)
    assert views.shape == (3, 4, 10) and views.dtype == torch.float64


def test_bad_arguments_are_rejected():
    for kwargs, word in [(dict(tau=0), 'tau'), (dict(num_views=-1), 'num_views'),
                         (dict(noise_weight=1.5), 'noise_weight')]:
        with pytest.raises(ValueError, match=word):
            TeKAPLoss(**kwargs)
    with pytest.raises(ValueError, match='noise_std'):
        TeKAPFeatureLoss(loss=dict(type='FitNetsLoss'), noise_std=-1)


# -- feature level ---------------------------------------------------------------------------


def hand_mse(student, teacher):
    return sum((s - t)**2 for s, t in zip(student, teacher)) / len(student)


def hand_partial_l2(student, teacher, batch, divisor):
    return sum(0.0 if (s <= t and t <= 0) else (s - t)**2
               for s, t in zip(student, teacher)) / (batch * divisor)


@pytest.mark.parametrize('inner,hand', [
    (dict(type='FitNetsLoss', loss_weight=2.0), lambda s, t: 2.0 * hand_mse(s, t)),
    (dict(type='OFDLoss', divisor=10.0, loss_weight=0.5),
     lambda s, t: 0.5 * hand_partial_l2(s, t, 2, 10.0)),
])
def test_feature_loss_with_one_view_equals_a_hand_computation(inner, hand):
    torch.manual_seed(0)
    student = torch.randn(2, 3, 2, 2)
    teacher = torch.randn(2, 3, 2, 2)
    a, sigma, lam = 0.1, 0.1, 0.8
    torch.manual_seed(5)
    noise = torch.randn(1, *teacher.shape)[0].flatten().tolist()
    s, t = student.flatten().tolist(), teacher.flatten().tolist()
    view = [(1 - a) * x + a * sigma * e for x, e in zip(t, noise)]
    expected = hand(s, t) + lam * hand(s, view)
    loss = TeKAPFeatureLoss(loss=inner, num_views=1, noise_weight=a, noise_std=sigma,
                            view_weight=lam)
    torch.manual_seed(5)
    assert loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert isinstance(loss.loss, (FitNetsLoss, OFDLoss))
    normalized = TeKAPFeatureLoss(loss=inner, num_views=1, noise_weight=a, noise_std=sigma,
                                  view_weight=lam, normalize=True)
    torch.manual_seed(5)
    assert normalized(student, teacher).item() == pytest.approx(expected / 1.8, rel=1e-5)


class WrappedWithoutTerms(torch.nn.Module):
    """The wrapped loss without ``squared_error_terms``: TeKAP's generic per-view sum."""

    def __init__(self, loss):
        super().__init__()
        self.inner = loss

    def forward(self, student, teacher):
        return self.inner(student, teacher)


@pytest.mark.parametrize('inner', [dict(type='FitNetsLoss', loss_weight=2.0),
                                   dict(type='OFDLoss', divisor=10.0, loss_weight=0.5)])
def test_feature_loss_over_three_views_keeps_one_tensor_with_the_same_value_and_gradient(
        inner):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 3, 4, 4, generator=generator)
    values, grads, saved = [], [], []
    for generic in (True, False):
        loss = TeKAPFeatureLoss(loss=inner, num_views=3)
        if generic:
            loss.loss = WrappedWithoutTerms(loss.loss)
        student = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1),
                              requires_grad=True)
        shapes = []
        torch.manual_seed(5)  # the same views
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(t.shape) or t,
                                                      lambda t: t):
            value = loss(student, teacher)
        value.backward()
        values.append(value.item())
        grads.append(student.grad)
        saved.append(sum(1 for shape in shapes if shape == student.shape))
    assert values[1] == pytest.approx(values[0], rel=1e-6)
    assert torch.allclose(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    assert saved == [4, 1]  # one difference per teacher view before, one tensor now


def test_feature_loss_with_zero_views_is_the_wrapped_loss():
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    wrapped = TeKAPFeatureLoss(loss=dict(type='OFDLoss'), num_views=0)
    assert torch.equal(wrapped(student, teacher), OFDLoss()(student, teacher))


# -- training runs ---------------------------------------------------------------------------


def train_and_check(cfg, work_dir, options, loss_names):
    """Train like tools/train.py; the teacher stays bit-identical, the student moves and every
    named distillation loss is logged at each iteration and finite."""
    record = train_recorded(cfg, work_dir, options)
    assert record.moved('teacher', floating_only=False) == []
    assert len(record.moved('student')) > 10
    histories = {name: record.history(name) for name in loss_names}
    assert all(len(h) == record.runner.iter and (h > 0).all() for h in histories.values())
    return record.runner, histories


def test_digits_logit_and_feature_config_trains(tmp_path):
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    options = {
        'model.teacher_ckpt': save_checkpoint_of(teacher_cfg.model.to_dict(),
                                                 str(tmp_path / 'teacher.pth')),
        'train_dataloader.dataset.shots_per_class': 1, 'train_dataloader.batch_size': 5,
        'train_cfg.max_epochs': 3, 'param_scheduler.T_max': 3,
        'default_hooks.checkpoint.interval': 3,
        'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None,
        # distillation alone, so that its decrease shows within six steps
        'model.calculate_student_loss': False}
    _, histories = train_and_check(
        config_path('digits/tekap_logit_feature_resnet18_w32_w4.py'), str(tmp_path / 'work'),
        options, ['loss_tekap', 'loss_hint'])
    total = histories['loss_tekap'] + histories['loss_hint']
    assert total[-2:].mean() < total[:2].mean()


@pytest.mark.parametrize('name', ['logit', 'feature'])
def test_digits_single_level_configs_build_with_their_loss(tmp_path, name):
    from mmkd.registry import MODELS
    cfg = Config.fromfile(config_path(f'digits/tekap_{name}_resnet18_w32_w4.py'))
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    cfg.model.teacher_ckpt = save_checkpoint_of(teacher_cfg.model.to_dict(),
                                                str(tmp_path / 'teacher.pth'))
    losses = MODELS.build(cfg.model).distiller.distill_losses
    expected = TeKAPLoss if name == 'logit' else TeKAPFeatureLoss
    assert [type(loss) for loss in losses.values()] == [expected]


def test_mmpretrain_kd_tekap_config_trains(tmp_path):
    cfg = Config.fromfile(config_path('tekap/tekap_kd_resnet34_resnet18_8xb32_in1k.py'))
    thin = dict(backbone=dict(base_channels=8, stem_channels=8), head=dict(in_channels=64))
    cfg.model.architecture.update(thin)
    cfg.model.teacher = dict(cfg.model.teacher, pretrained=False, **thin)
    ckpt = save_checkpoint_of(cfg.model.teacher.to_dict(), str(tmp_path / 'teacher.pth'))
    info = make_classification_dataset(tmp_path / 'data', image_size=(32, 32))
    options = cls_data_options(info, max_iters=2, save_checkpoint=False)
    options.update({'model.teacher_ckpt': ckpt, 'model.dry_run_shape': (3, 32, 32)})
    train_and_check(cfg, str(tmp_path / 'work'), options, ['loss_tekap', 'student.loss'])


def test_mmdet_ofd_tekap_config_trains_on_backbone_taps(tmp_path):
    cfg = Config.fromfile(config_path('tekap/tekap_ofd_retinanet_r101_r50_fpn_1x_coco.py'))
    thin = dict(backbone=dict(base_channels=8, init_cfg=None),
                neck=dict(in_channels=[32, 64, 128, 256], out_channels=16),
                bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1))
    cfg.model.architecture.update(thin)
    cfg.model.teacher = dict(cfg.model.teacher, pretrained=False, **thin)
    ckpt = save_checkpoint_of(cfg.model.teacher.to_dict(), str(tmp_path / 'teacher.pth'))
    info = make_coco_detection(tmp_path / 'coco', num_images=2, image_size=(64, 64))
    options = det_data_options(info, max_iters=1, save_checkpoint=False)
    options.update({'model.teacher_ckpt': ckpt, 'model.dry_run_shape': (3, 64, 64)})
    runner, _ = train_and_check(cfg, str(tmp_path / 'work'), options,
                                [f'loss_stage{i}' for i in range(1, 5)])
    losses = runner.model.distiller.distill_losses
    assert all(isinstance(loss.loss, OFDLoss) for loss in losses.values())


def test_logit_loss_on_per_pixel_logits_is_the_mean_over_pixels():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    flat = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 4)  # noqa: E731 (pixels as samples)
    torch.manual_seed(1)
    per_pixel = TeKAPLoss(num_views=2)(student, teacher)
    torch.manual_seed(1)
    noise = torch.randn(2, 2, 4, 3, 3)  # the same draw, laid out as the pixels
    expected = KDLoss()(flat(student), flat(teacher)) + 0.8 * sum(
        KDLoss()(flat(student), flat(0.9 * teacher + 0.1 * noise[i])) for i in range(2))
    torch.testing.assert_close(per_pixel, expected)
