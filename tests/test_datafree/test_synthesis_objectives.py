"""DF-DearKD's synthesis objectives against hand computations: DeepInversion's priors (TV, L2,
BN statistics), the boundary-preserving intra-divergence term, their float32 reduction under
half precision and their hyper-parameter checks. They live in mmkd.datafree, next to the
synthesizer, not among the distillation losses."""
import math

import pytest
import torch
import torch.nn as nn

import mmkd.models.losses
from mmkd.datafree import (BNStatisticsLoss, IntraDivergenceLoss, intra_divergence_terms,
                           l2_prior, total_variation)
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError

NAN, INF = float('nan'), float('inf')


def test_distillation_losses_hold_no_synthesis_term():
    """Every module mmkd.models.losses exports is a registered distillation loss."""
    for name in mmkd.models.losses.__all__:
        assert name not in ('BNStatisticsLoss', 'IntraDivergenceLoss', 'total_variation',
                            'l2_prior', 'bn_statistics_term', 'intra_divergence_terms'), name
        value = getattr(mmkd.models.losses, name)
        if isinstance(value, type) and issubclass(value, nn.Module):
            assert MODELS.get(name) is value, name


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


def test_data_free_terms_are_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)).eval()
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    images = torch.randn(4, 3, 8, 8, requires_grad=True)
    features = []
    net[1].register_forward_hook(lambda module, args, output: features.append(args[0]))
    net[4].register_forward_hook(lambda module, args, output: features.append(args[0]))
    with BNStatisticsLoss(net, first_layer_weight=10.0) as bn_loss:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            net(images)
            loss = bn_loss.loss()
            tv, l2 = total_variation(images.bfloat16()), l2_prior(images.bfloat16())
    assert all(f.dtype == torch.bfloat16 for f in features)  # the convs ran in bfloat16

    def term(feature, bn):  # DeepInversion's BN term in float32 on the bfloat16 feature
        feature = feature.detach().float()
        mean, var = feature.mean(dim=(0, 2, 3)), feature.var(dim=(0, 2, 3), unbiased=False)
        return (mean - bn.running_mean).norm() + (var - bn.running_var).norm()

    expected = 10.0 * term(features[0], net[1]) + term(features[1], net[4])
    assert loss.dtype == tv.dtype == l2.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    rounded = images.detach().bfloat16().float()
    torch.testing.assert_close(tv, total_variation(rounded))
    torch.testing.assert_close(l2, l2_prior(rounded))
    loss.backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()


@pytest.mark.parametrize('arg,bad_values,good', [
    ('ep_weight', [-50, NAN, INF], 0),
    ('triplet_weight', [-0.5, NAN], 0),
    ('margin', [-0.2, NAN, INF], 0.0),
])
def test_intra_divergence_hyper_parameters_are_checked(arg, bad_values, good):
    for bad in bad_values:
        with pytest.raises(ConfigError, match=f'IntraDivergenceLoss: {arg}.*Fix: '):
            IntraDivergenceLoss(**{arg: bad})
    assert getattr(IntraDivergenceLoss(**{arg: good}), arg) == good


def test_bn_statistics_first_layer_weight_is_checked():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    for bad in (-1.0, NAN, INF):
        with pytest.raises(ConfigError, match='BNStatisticsLoss: first_layer_weight must be a '
                                              'finite number >= 0'):
            BNStatisticsLoss(net, first_layer_weight=bad)
    assert not net[1]._forward_hooks  # nothing attached by a refused build
    with BNStatisticsLoss(net, first_layer_weight=0.0):
        pass


@pytest.mark.parametrize('dtype', (torch.bfloat16, torch.float16), ids=str)
def test_intra_divergence_of_half_precision_embeddings_is_the_float32_result(dtype):
    torch.manual_seed(0)
    embeddings = torch.randn(6, 8).to(dtype).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = IntraDivergenceLoss()
    result = loss(embeddings, labels)
    assert result.dtype == torch.float32 and result.dim() == 0
    torch.testing.assert_close(result, loss(embeddings.detach().float(), labels),
                               rtol=1e-6, atol=1e-7)
    result.backward()
    assert embeddings.grad.dtype == dtype and torch.isfinite(embeddings.grad).all()
