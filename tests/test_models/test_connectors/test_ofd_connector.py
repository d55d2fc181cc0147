"""OFD's margin ReLU (OFDTeacherConnector): the margin against the official formula, its BN
found in real mmpretrain ResNets, its state in checkpoints, and its independence from the dry
run of any other algorithm."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from helpers import save_checkpoint_of, tiny_classifier
from mmkd.models import OFDTeacherConnector, build_model_from_cfg, gaussian_margin
from mmkd.utils.errors import ConfigRuntimeError
from ofd_helpers import TEACHER, build_ofd, ofd_taps, reference_margin, \
    save_trained_looking_teacher


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_trained_looking_teacher(TEACHER,
                                        str(tmp_path_factory.mktemp('ofd') / 'teacher.pth'))


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


def test_shape_check_passes_the_feature_until_the_margin_is_set():
    connector = OFDTeacherConnector(in_channels=2, margin_source='empirical')
    feature = torch.tensor([-3.0, -0.1, 2.0, -2.0]).view(1, 2, 2, 1)
    assert connector.forward_for_shape_check(feature) is feature
    with pytest.raises(ConfigRuntimeError, match="custom_hooks=\\[dict\\(type='OFDMarginHook'"):
        connector(feature)
    connector.set_margin(torch.tensor([-1.0, -0.5]))
    clipped = torch.tensor([-1.0, -0.1, 2.0, -0.5]).view(1, 2, 2, 1)
    assert torch.equal(connector.forward_for_shape_check(feature), clipped)
    assert torch.equal(connector(feature), clipped)


def test_the_dry_run_of_one_algorithm_leaves_the_margin_relu_of_another_alone(teacher_ckpt):
    waiting = build_ofd(teacher_ckpt, tap_pairs=ofd_taps(stages=(4, ),
                                                         margin_source='empirical'))
    margin_relu = waiting.distiller.connectors['stage4_teacher']
    outcomes = []

    class CallTheOther(nn.Module):
        """A teacher connector of the second algorithm: in the middle of that algorithm's
        dry run it calls the first algorithm's margin ReLU, whose margin is not measured."""

        def forward(self, feature):
            try:
                margin_relu(feature)
                outcomes.append('passed through')
            except ConfigRuntimeError:
                outcomes.append('raised')
            return feature

    probe = dict(name='probe', student='backbone.layer4', recorder='PreReLU',
                 student_connector=dict(type='ConvBNConnector'), teacher_connector=CallTheOther(),
                 loss=dict(type='FitNetsLoss'))
    building = build_ofd(teacher_ckpt, tap_pairs=ofd_taps(stages=(4, )) + [probe])
    assert outcomes and set(outcomes) == {'raised'}
    assert bool(building.distiller.connectors['stage4_teacher'].margin_ready)
    assert not bool(margin_relu.margin_ready)


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
