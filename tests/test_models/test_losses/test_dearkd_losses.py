"""DearKD's losses and head against hand computations: the distillation-token loss, the
two-token head, DeepInversion's terms and the boundary-preserving intra-divergence loss."""
import math

import pytest
import torch
import torch.nn as nn
from mmpretrain.structures import DataSample

from mmkd.models import build_model_from_cfg
from mmkd.models.losses import (BNStatisticsLoss, DearKDLogitLoss, IntraDivergenceLoss,
                                intra_divergence_terms, l2_prior, total_variation)


def test_hard_label_loss_is_cross_entropy_with_the_teachers_argmax():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    teacher = torch.tensor([[0.1, 3.0, 0.0], [5.0, 1.0, 0.0]])  # argmax: 1, 0
    p = student.softmax(1)
    expected = 0.5 * -(math.log(p[0, 1]) + math.log(p[1, 0])) / 2
    assert torch.allclose(DearKDLogitLoss()(student, teacher), torch.tensor(expected))
    smoothed = DearKDLogitLoss(label_smoothing=0.3, loss_weight=1.0)(student, teacher)
    log_p = student.log_softmax(1)
    by_hand = -(0.7 * torch.stack([log_p[0, 1], log_p[1, 0]]) + 0.3 * log_p.mean(1)).mean()
    assert torch.allclose(smoothed, by_hand)


def test_soft_mode_is_kd_with_temperature():
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    tau = 3.0
    p_t = (teacher / tau).softmax(1)
    kl = (p_t * (p_t.log() - (student / tau).log_softmax(1))).sum(1).mean() * tau**2
    loss = DearKDLogitLoss(mode='soft', tau=tau, loss_weight=0.5)(student, teacher)
    assert torch.allclose(loss, 0.5 * kl, atol=1e-6)
    with pytest.raises(ValueError, match='mode'):
        DearKDLogitLoss(mode='medium')


def _two_token_classifier():
    torch.manual_seed(0)
    model = build_model_from_cfg(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='mmkd.MHCAVisionTransformer',
                      arch=dict(embed_dims=16, num_layers=2, num_heads=4,
                                feedforward_channels=32),
                      num_mhca_layers=1, img_size=16, patch_size=4),
        head=dict(type='mmkd.DearKDClsHead', num_classes=3, in_channels=16,
                  init_cfg=None)))  # random (not zero) head weights for a real check
    return model


def test_head_trains_both_tokens_and_averages_them():
    model = _two_token_classifier()
    images = torch.randn(4, 3, 16, 16)
    labels = torch.tensor([0, 2, 1, 2])
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    cls_token, dist_token = model.backbone(images)[-1]
    cls_score = model.head.layers.head(cls_token)
    dist_score = model.head.layers.head_dist(dist_token)
    ce = nn.functional.cross_entropy

    losses = model(images, samples, mode='loss')  # dist_target='label' (training alone)
    assert torch.allclose(losses['loss_cls'], 0.5 * ce(cls_score, labels), atol=1e-6)
    assert torch.allclose(losses['loss_dist'], 0.5 * ce(dist_score, labels), atol=1e-6)
    model.head.dist_target = 'teacher'  # left to the distiller: no label loss on it
    assert set(model(images, samples, mode='loss')) == {'loss_cls'}
    assert torch.allclose(model(images, mode='tensor'), (cls_score + dist_score) / 2, atol=1e-6)
    predictions = model(images, mode='predict')
    assert torch.equal(torch.cat([p.pred_label for p in predictions]),
                       ((cls_score + dist_score) / 2).argmax(1))
    with pytest.raises(ValueError, match='dist_target'):
        model.head.dist_target = 'both'


def test_head_names_a_backbone_without_distillation_token():
    with pytest.raises(TypeError, match='distillation token'):
        model = build_model_from_cfg(dict(
            type='mmpretrain.ImageClassifier',
            backbone=dict(type='VisionTransformer', arch='deit-tiny', img_size=16,
                          patch_size=8),
            head=dict(type='mmkd.DearKDClsHead', num_classes=3, in_channels=192)))
        model(torch.randn(1, 3, 16, 16), mode='tensor')


def test_total_variation_and_l2_prior_by_hand():
    image = torch.tensor([[[[0., 1.], [3., 2.]]]])  # (1, 1, 2, 2)
    # horizontal (1, -1), vertical (3, 1), diagonal (2), anti-diagonal (1 - 3 = -2)
    expected = math.sqrt(1 + 1) + math.sqrt(9 + 1) + 2 + 2
    assert torch.allclose(total_variation(image), torch.tensor(expected))
    batch = torch.stack([torch.full((1, 2, 2), 3.0), torch.zeros(1, 2, 2)])
    assert torch.allclose(l2_prior(batch), torch.tensor((6.0 + 0.0) / 2))


def test_bn_statistics_loss_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                        nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)).eval()
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, 4, 4)
    with BNStatisticsLoss(net, first_layer_weight=10.0) as bn_loss:
        net(x)
        loss = bn_loss.loss()
        with pytest.raises(RuntimeError, match='did not run'):
            bn_loss.loss()  # terms are consumed by each call

    def term(feature, bn):
        mean = feature.mean(dim=(0, 2, 3))
        var = feature.var(dim=(0, 2, 3), unbiased=False)
        return (mean - bn.running_mean).norm() + (var - bn.running_var).norm()

    first = net[0](x)
    second = net[3](net[2](net[1](first)))
    assert torch.allclose(loss, 10 * term(first, net[1]) + term(second, net[4]), atol=1e-5)
    assert not net[1]._forward_hooks  # hooks removed on exit
    with pytest.raises(ValueError, match='no BatchNorm'):
        BNStatisticsLoss(nn.Linear(2, 2))


def test_intra_divergence_terms_by_hand():
    # Unit embeddings on a circle: class 0 at angles 0, 0.2, 1.0; class 1 at 1.4 and 3.
    angles = torch.tensor([0.0, 0.2, 1.0, 1.4, 3.0])
    embeddings = torch.stack([angles.cos(), angles.sin()], 1) * 5  # scale is normalised away
    labels = torch.tensor([0, 0, 0, 1, 1])
    chord = lambda a, b: 2 * math.sin(abs(a - b) / 2)  # noqa: E731
    a = angles.tolist()
    easy = [chord(a[0], a[1]), chord(a[1], a[0]), chord(a[2], a[1]),
            chord(a[3], a[4]), chord(a[4], a[3])]
    hard_pos = [chord(a[0], a[2]), chord(a[1], a[2]), chord(a[2], a[0]),
                chord(a[3], a[4]), chord(a[4], a[3])]
    hard_neg = [chord(a[0], a[3]), chord(a[1], a[3]), chord(a[2], a[3]),
                chord(a[3], a[2]), chord(a[4], a[2])]
    margin = 0.2
    divergence, triplet = intra_divergence_terms(embeddings, labels, margin)
    assert math.isclose(divergence.item(), -sum(easy) / 5, rel_tol=1e-5)
    expected = sum(max(0.0, p - n + margin) for p, n in zip(hard_pos, hard_neg)) / 5
    assert math.isclose(triplet.item(), expected, rel_tol=1e-5)
    loss = IntraDivergenceLoss(ep_weight=50, triplet_weight=0.5, margin=margin)
    assert torch.allclose(loss(embeddings, labels), 50 * divergence + 0.5 * triplet)
    # An anchor alone in its class has no positive and is skipped.
    alone = intra_divergence_terms(embeddings[:4], labels[:4], margin)[0]
    assert math.isclose(alone.item(), -sum(easy[:3]) / 3, rel_tol=1e-5)
