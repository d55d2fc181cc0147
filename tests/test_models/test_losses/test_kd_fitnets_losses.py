"""KD and FitNets losses against hand computations."""
import math

import pytest
import torch
from mmengine.registry import DefaultScope

from mmkd.models.losses import FitNetsLoss, KDLoss, TeKAPFeatureLoss
from mmkd.models.recorders import PreReLURecorder, build_recorder


def softmax(values, tau):
    exps = [math.exp(v / tau) for v in values]
    return [e / sum(exps) for e in exps]


def test_kd_loss_equals_hand_computation():
    student = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
    teacher = [[3.0, 2.0, 1.0], [1.0, 0.0, 0.0]]
    tau = 2.0
    per_sample = []
    for s, t in zip(student, teacher):
        p_s, p_t = softmax(s, tau), softmax(t, tau)
        per_sample.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)) * tau**2)
    expected = 0.5 * sum(per_sample) / len(per_sample)
    loss = KDLoss(tau=tau, loss_weight=0.5)(torch.tensor(student), torch.tensor(teacher))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_on_segmentation_logits_is_the_mean_over_pixels_by_hand():
    # (B, K, H, W) = (2, 3, 1, 2): four pixels, each a distribution over three classes
    student = [[[[1.0, 0.0]], [[2.0, -1.0]], [[3.0, 0.5]]],
               [[[0.5, 2.0]], [[-1.0, 2.0]], [[0.0, -2.0]]]]
    teacher = [[[[3.0, 1.0]], [[2.0, 1.0]], [[1.0, 1.0]]],
               [[[1.0, 0.0]], [[0.0, 3.0]], [[0.0, 0.5]]]]
    tau, per_pixel = 2.0, []
    for s_map, t_map in zip(student, teacher):
        for w in range(2):
            p_s = softmax([s_map[k][0][w] for k in range(3)], tau)
            p_t = softmax([t_map[k][0][w] for k in range(3)], tau)
            per_pixel.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)) * tau**2)
    expected = 0.5 * sum(per_pixel) / 4
    student, teacher = torch.tensor(student), torch.tensor(teacher)
    loss = KDLoss(tau=tau, loss_weight=0.5)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the same as KD on the pixels as samples, (B * H * W, K)
    flat = KDLoss(tau=tau, loss_weight=0.5)(student.permute(0, 2, 3, 1).reshape(-1, 3),
                                            teacher.permute(0, 2, 3, 1).reshape(-1, 3))
    assert loss.item() == pytest.approx(flat.item(), rel=1e-6)


def test_kd_loss_is_zero_for_equal_logits_and_sends_no_gradient_to_the_teacher():
    logits = torch.randn(4, 10)
    teacher = logits.clone().requires_grad_(True)
    student = logits.clone().requires_grad_(True)
    loss = KDLoss(tau=4)(student, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    (loss + student.sum()).backward()
    assert teacher.grad is None


def test_kd_loss_rejects_bad_temperature():
    with pytest.raises(ValueError, match='tau'):
        KDLoss(tau=0)


@pytest.mark.parametrize('reduction', ['mean', 'batchmean'])
def test_fitnets_loss_equals_hand_computation(reduction):
    student = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]], [[[3.0, 0.0]], [[1.0, 1.0]]]])
    teacher = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]], [[[1.0, 1.0]], [[1.0, -1.0]]]])
    squares = [1, 0, 1, 4, 4, 1, 0, 4]  # (s - t)^2 element by element
    expected = sum(squares) / (8 if reduction == 'mean' else 2) * 2.0
    loss = FitNetsLoss(loss_weight=2.0, reduction=reduction)(student, teacher)
    assert loss.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match='reduction'):
        FitNetsLoss(reduction='sum')


@pytest.mark.parametrize('reduction', ['mean', 'batchmean'])
def test_fitnets_loss_gradient_is_the_eager_formulas_and_keeps_one_tensor(reduction):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t,
                                                  lambda t: t):
        loss = FitNetsLoss(loss_weight=2.0, reduction=reduction)(student, teacher)
    assert saved == [student.shape]  # the difference only
    loss.backward()
    count = student.numel() if reduction == 'mean' else 2
    expected = 2.0 * 2.0 * (student - teacher).detach() / count
    assert torch.allclose(student.grad, expected, atol=1e-7)
    assert teacher.grad is None  # the teacher is a constant
    assert torch.autograd.gradcheck(
        lambda s: FitNetsLoss(reduction=reduction)(s, teacher.detach().double()),
        (student.detach().double().requires_grad_(), ))


def test_mmkd_components_build_whatever_the_default_scope():
    # e.g. a config that keeps mmseg's default_scope, or the scope the last runner left
    with DefaultScope.overwrite_default_scope('mmseg'):
        assert isinstance(TeKAPFeatureLoss(loss=dict(type='FitNetsLoss')).loss, FitNetsLoss)
        assert isinstance(build_recorder(dict(type='PreReLU', source='backbone.layer1')),
                          PreReLURecorder)
