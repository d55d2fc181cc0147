"""Loss weights and hyper-parameters are checked at build; a non-finite distillation loss
stops training at the first step, naming the loss, its taps and the iteration."""
import copy
import math
import uuid

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmpretrain.structures import DataSample

from helpers import (config_path, digits_options, save_checkpoint_of, tiny_classifier)
from mmkd.apis.train import build_train_runner
from mmkd.models.losses import NonFiniteLossError
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError

#: Every loss built from a config, with the arguments it needs besides the one under test.
WEIGHTED_LOSSES = [
    dict(type='KDLoss'),
    dict(type='FitNetsLoss'),
    dict(type='OFDLoss'),
    dict(type='FSPLoss'),
    dict(type='TeKAPLoss'),
    dict(type='DearKDLogitLoss'),
]


@pytest.mark.parametrize('cfg', WEIGHTED_LOSSES, ids=lambda cfg: cfg['type'])
def test_loss_weight_must_be_finite_and_positive(cfg):
    loss_type = cfg['type']
    for bad, words in [(0, 'remove the loss'), (0.0, 'remove the loss'),
                       (-0.5, 'maximise the loss.*loss_weight=0.5'),
                       (float('nan'), 'finite'), (float('inf'), 'finite'),
                       ('0.5', 'finite'), (None, 'finite'), (True, 'finite')]:
        with pytest.raises(ConfigError, match=f'{loss_type}: loss_weight.*{words}'):
            MODELS.build(dict(cfg, loss_weight=bad))
    for good in (1e-4, 1, 0.5, np.float64(2.0)):
        assert MODELS.build(dict(cfg, loss_weight=good)).loss_weight == good


def test_zero_loss_weight_message_names_the_loss_and_the_fix():
    with pytest.raises(ConfigError) as error:
        MODELS.build(dict(type='OFDLoss', divisor=1e4, loss_weight=0))
    message = str(error.value)
    assert message.startswith('OFDLoss: loss_weight=0 switches the loss off')
    assert 'remove the loss (its tap_pairs entry' in message
    assert isinstance(error.value, ValueError)  # as before for `except ValueError`


def test_a_zero_weight_in_a_distiller_config_fails_when_the_distiller_is_built():
    tap_pairs = [dict(name='kd', student='head.fc', loss=dict(type='KDLoss', loss_weight=0.7)),
                 dict(name='hint', student='backbone.layer4',
                      loss=dict(type='FitNetsLoss', loss_weight=0))]
    with pytest.raises(ConfigError, match='FitNetsLoss: loss_weight=0') as error:
        MODELS.build(dict(type='ConfigurableDistiller', tap_pairs=tap_pairs))
    assert "distill loss 'loss_hint'" in error.value.__notes__[-1]


NAN, INF = float('nan'), float('inf')
#: (loss config, argument, rejected values, an accepted value).
HYPER_PARAMETERS = [
    (dict(type='KDLoss'), 'tau', [0, -4, NAN, INF, '4'], 1),
    (dict(type='OFDLoss'), 'divisor', [0, -1000, NAN, INF], 1e5),
    (dict(type='FitNetsLoss'), 'reduction', ['sum', None], 'batchmean'),
    (dict(type='FSPLoss'), 'reduction', ['sum'], 'mean'),
    (dict(type='TeKAPLoss'), 'tau', [0, -1, NAN], 2.0),
    (dict(type='TeKAPLoss'), 'num_views', [-1, 2.5, NAN, True], 0),
    (dict(type='TeKAPLoss'), 'noise_weight', [-0.1, 1.5, NAN], 1.0),
    (dict(type='TeKAPLoss'), 'view_weight', [-0.8, NAN, INF, 0], 0.5),
    (dict(type='TeKAPFeatureLoss', loss=dict(type='FitNetsLoss')), 'noise_std',
     [-1, NAN, INF], 0.0),
    (dict(type='TeKAPFeatureLoss', loss=dict(type='FitNetsLoss')), 'view_weight',
     [-0.8, 0], 0.8),
    (dict(type='TeKAPFeatureLoss', loss=dict(type='FitNetsLoss')), 'num_views', [-3, 1.5], 1),
    (dict(type='TeKAPLoss'), 'normalize', ['False', None], True),
    (dict(type='TeKAPFeatureLoss', loss=dict(type='FitNetsLoss')), 'normalize', ['yes'], False),
    (dict(type='DearKDLogitLoss'), 'mode', ['medium'], 'soft'),
    (dict(type='DearKDLogitLoss', mode='soft'), 'tau', [0, -3, NAN], 3.0),
    (dict(type='DearKDLogitLoss'), 'label_smoothing', [-0.1, 1.0, NAN], 0.1),
]


@pytest.mark.parametrize('cfg,arg,bad_values,good',
                         HYPER_PARAMETERS,
                         ids=[f'{c["type"]}.{a}' for c, a, _, _ in HYPER_PARAMETERS])
def test_hyper_parameters_are_checked_at_build(cfg, arg, bad_values, good):
    for bad in bad_values:
        with pytest.raises(ConfigError, match=f'{cfg["type"]}: {arg}.*Fix: ') as error:
            MODELS.build(dict(cfg, **{arg: bad}))
        assert repr(bad) in str(error.value) or arg + '=0' in str(error.value)
    assert getattr(MODELS.build(dict(cfg, **{arg: good})), arg) == good


def test_zero_view_weight_with_views_is_refused_but_no_views_at_all_is_plain_kd():
    with pytest.raises(ConfigError, match='view_weight=0 with num_views=3.*set num_views=0'):
        MODELS.build(dict(type='TeKAPLoss', view_weight=0))
    MODELS.build(dict(type='TeKAPLoss', num_views=0, view_weight=0))


def test_tekap_feature_loss_checks_the_loss_it_wraps():
    with pytest.raises(ConfigError, match='FitNetsLoss: loss_weight=0'):
        MODELS.build(dict(type='TeKAPFeatureLoss', loss=dict(type='FitNetsLoss', loss_weight=0)))


def test_soft_mode_label_smoothing_is_a_config_error():
    with pytest.raises(ConfigError, match='label_smoothing applies to mode="hard" only'):
        MODELS.build(dict(type='DearKDLogitLoss', mode='soft', label_smoothing=0.1))


# -- a non-finite loss at run time -------------------------------------------------------------

STUDENT = tiny_classifier(width=4)
TEACHER = tiny_classifier(width=8)


def build_algorithm(tmp_path, tap_pairs):
    ckpt = save_checkpoint_of(TEACHER, str(tmp_path / 'teacher.pth'))
    return MODELS.build(dict(
        type='SingleTeacherDistill', architecture=copy.deepcopy(STUDENT),
        teacher=copy.deepcopy(TEACHER), teacher_ckpt=ckpt, dry_run_shape=(3, 32, 32),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=tap_pairs))).train()


def labels(size):
    return [DataSample().set_gt_label(i % 10) for i in range(size)]


def test_a_loss_that_overflows_on_finite_features_names_the_loss_its_taps_and_the_iteration(
        tmp_path):
    tap_pairs = [dict(name='kd', student='head.fc', loss=dict(type='KDLoss')),
                 dict(name='stage4', student='backbone.layer4', recorder='PreReLU',
                      student_connector=dict(type='ConvBNConnector'),
                      loss=dict(type='FitNetsLoss'))]
    algorithm = build_algorithm(tmp_path, tap_pairs)
    hub = MessageHub.get_instance(f'test_overflow_{uuid.uuid4().hex}')  # the newest: current
    hub.update_info('iter', 41)
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 32, 32)
    losses = algorithm(inputs, labels(2), mode='loss')  # an ordinary input: finite
    assert all(torch.isfinite(value) for value in losses.values())
    # The frozen teacher (BN on running statistics) maps a huge but finite input to features
    # around 1e20; their squares overflow float32 in the FitNets loss.
    with pytest.raises(NonFiniteLossError) as error:
        algorithm(inputs * 1e22, labels(2), mode='loss')
    message = str(error.value)
    assert message.startswith("distillation loss 'loss_stage4' (FitNetsLoss) is inf at "
                              'iteration 42 (runner.iter=41).')
    assert ("Taps: student: student tap 'backbone.layer4' (recorder 'stage4', connectors "
            "['stage4_student']); teacher: teacher tap 'backbone.layer4' (recorder "
            "'stage4')") in message
    assert 'its inputs are finite: the loss overflowed' in message
    assert 'lower the learning rate' in message and 'bfloat16' in message
    assert isinstance(error.value, FloatingPointError)


class CorruptInput(Hook):
    """Puts one infinite pixel into the batch of the training iteration ``at`` (0-based)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps = 0

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.steps += 1
        if runner.iter == self.at:
            data_batch['inputs'] = [image.float() for image in data_batch['inputs']]
            data_batch['inputs'][0][0, 0, 0] = math.inf


def test_training_stops_at_the_first_iteration_whose_distillation_loss_is_nan(tmp_path):
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    cfg = Config.fromfile(config_path('digits/kd_resnet18_w32_w4.py'))
    cfg.model.teacher_ckpt = save_checkpoint_of(teacher_cfg.model.to_dict(),
                                                str(tmp_path / 'teacher.pth'))
    options = dict(digits_options(epochs=1), **{'train_dataloader.batch_size': 8})
    runner = build_train_runner(cfg, work_dir=str(tmp_path / 'work'), cfg_options=options)
    corrupt = CorruptInput(at=2)
    runner.register_hook(corrupt)
    with pytest.raises(NonFiniteLossError) as error:
        runner.train()
    assert corrupt.steps == 3  # stopped at the corrupted step
    message = str(error.value)
    assert message.startswith("distillation loss 'loss_kd' (KDLoss) is nan at iteration 3 "
                              '(runner.iter=2).')
    assert "student: student tap 'head.fc' (recorder 'kd')" in message
    assert "teacher: teacher tap 'head.fc' (recorder 'kd')" in message
    assert "its inputs ['student', 'teacher'] already hold inf/NaN" in message
