"""DearKD's loss and head against hand computations: the distillation-token loss and the
two-token head (the data-free synthesis terms are in tests/test_datafree)."""
import math

import pytest
import torch
import torch.nn as nn
from mmpretrain.structures import DataSample

from mmkd.models import build_model_from_cfg
from mmkd.models.losses import DearKDLogitLoss


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
