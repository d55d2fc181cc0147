"""One clear error per config mistake: tap pairs, config paths, syntax errors, the dry run."""
import copy

import pytest
import torch
import torch.nn as nn

from helpers import save_checkpoint_of, tiny_classifier
from mmkd.models.builder import build_model_from_cfg
from mmkd.registry import MODELS
from mmkd.utils.config import read_config
from mmkd.utils.errors import (ConfigError, ConfigRuntimeError, ModuleImportError,
                               NameNotFoundError, UserError, UserFileNotFoundError)

STUDENT = tiny_classifier(width=4)
TEACHER = tiny_classifier(width=8)
KD = dict(name='kd', student='head.fc', loss=dict(type='KDLoss', tau=4))
HINT = dict(name='hint', student='backbone.layer4', recorder='PreReLU',
            loss=dict(type='FitNetsLoss'))


@pytest.fixture
def teacher_ckpt(tmp_path):
    return save_checkpoint_of(TEACHER, str(tmp_path / 'teacher.pth'))


def build(teacher_ckpt, tap_pairs=None, architecture=None, **kwargs):
    architecture = copy.deepcopy(STUDENT) if architecture is None else architecture
    cfg = dict(type='SingleTeacherDistill', architecture=architecture,
               teacher=copy.deepcopy(TEACHER), teacher_ckpt=teacher_ckpt,
               dry_run_shape=(3, 32, 32),
               distiller=dict(type='ConfigurableDistiller',
                              tap_pairs=[KD] if tap_pairs is None else tap_pairs))
    cfg.update(kwargs)
    return MODELS.build(cfg)


# -- tap_pairs -----------------------------------------------------------------------------
def test_tap_pair_that_is_not_a_dict_names_the_index_and_the_expected_form(teacher_ckpt):
    with pytest.raises(ConfigError, match=r"tap_pairs\[1\] must be a dict, got str 'hint'\. "
                                          r".*e\.g\. dict\(name='kd', student='head\.fc'"):
        build(teacher_ckpt, tap_pairs=[KD, 'hint'])
    with pytest.raises(ConfigError, match=r'tap_pairs must be a list of dicts, got dict'):
        build(teacher_ckpt, tap_pairs=KD)
    with pytest.raises(KeyError, match=r"tap_pairs\[0\] needs 'loss', e\.g\. dict\(") as error:
        build(teacher_ckpt, tap_pairs=[dict(name='kd', student='head.fc')])
    assert isinstance(error.value, UserError)
    with pytest.raises(NameNotFoundError, match=r"tap_pairs\[0\] has unknown keys \['studnet'\]"):
        build(teacher_ckpt, tap_pairs=[dict(KD, studnet='head.fc')])


# -- config paths and files ----------------------------------------------------------------
def test_missing_package_config_names_the_folder_searched_and_close_names():
    with pytest.raises(UserFileNotFoundError, match=(
            r"mmpretrain has no config 'resnet/resnet81_8xb32_in1k\.py' \(searched \S+"
            r"mmpretrain/\.mim/configs\)\. "
            r"Did you mean one of \['resnet/resnet18_8xb32_in1k\.py'")):
        read_config('mmpretrain::resnet/resnet81_8xb32_in1k.py')
    with pytest.raises(FileNotFoundError, match=(
            r"mmkd has no config 'digits/kd_resnet18_w32_w5\.py' \(searched .*configs\)\. "
            r"Did you mean one of \['digits/kd_resnet18_w32_w4\.py'")):
        read_config('mmkd::digits/kd_resnet18_w32_w5.py')
    with pytest.raises(NameNotFoundError, match=r"'mmpretrian' is not an installed package.*"
                                                r"Did you mean one of \['mmpretrain'"):
        build_model_from_cfg(dict(cfg_path='mmpretrian::resnet/resnet18_8xb32_in1k.py'))


def test_missing_config_file_and_syntax_error_name_file_and_line(tmp_path):
    (tmp_path / 'my_config.py').write_text("model = dict(type='ImageClassifier')\n")
    with pytest.raises(UserFileNotFoundError, match=r"config file \S+my_confg\.py does not exist"
                                                    r"\. Did you mean one of \['my_config\.py'\]"):
        read_config(str(tmp_path / 'my_confg.py'))
    with pytest.raises(UserFileNotFoundError, match=r'the folder \S+nowhere does not exist'):
        read_config(str(tmp_path / 'nowhere' / 'config.py'))

    base = tmp_path / 'base.py'
    base.write_text("a = 1\nmodel = dict(\n    type='ImageClassifier'\n    neck=None)\n")
    with pytest.raises(ConfigError, match=rf'config {base}, line 3: .*'):
        read_config(str(base))
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['base.py']\n")
    with pytest.raises(ConfigError, match=rf'config {base}, line 3'):  # names the base file
        read_config(str(child))


# -- the build-time dry run -----------------------------------------------------------------
@pytest.mark.parametrize('shape', [(3, 32), (3, 0, 32), '3, 32, 32', (3.0, 32, 32),
                                   (True, 32, 32)])
def test_dry_run_shape_is_checked_up_front(teacher_ckpt, shape):
    with pytest.raises(ConfigError, match=r'dry_run_shape must be the input shape \(C, H, W\).*'
                                          r'three positive ints.*or None'):
        build(teacher_ckpt, dry_run_shape=shape)


def test_connector_error_of_the_dry_run_has_no_dry_run_shape_note(teacher_ckpt):
    with pytest.raises(ValueError, match='ConvBNConnector') as error:
        build(teacher_ckpt, tap_pairs=[HINT])
    assert 'dry_run_shape' not in str(error.value)
    assert not getattr(error.value, '__notes__', [])


def test_model_forward_error_keeps_its_type_and_message_and_gets_a_note(teacher_ckpt):
    with pytest.raises(RuntimeError) as error:
        build(teacher_ckpt, dry_run_shape=(1, 32, 32))  # the teacher's conv needs 3 channels
    assert 'dry_run_shape' not in str(error.value)
    assert error.value.__notes__ == [
        "(raised by the teacher's forward in the build-time dry run of SingleTeacherDistill on "
        'a random input of shape (2, 1, 32, 32); if the teacher needs another input size, set '
        'dry_run_shape=(C, H, W) in the algorithm to one both models accept)']


class FailingStudent(nn.Module):
    """A student whose forward raises ``error`` (exceptions of any signature must pass the dry
    run unchanged)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.head = nn.Linear(4, 10)
        self.error = error

    def forward(self, inputs, data_samples=None, mode='tensor'):
        raise self.error


@pytest.mark.parametrize('error', [
    KeyError('img_shape'),
    UnicodeDecodeError('utf-8', b'\xff', 0, 1, 'invalid start byte'),
])
def test_student_forward_error_is_re_raised_unchanged_with_a_note(teacher_ckpt, error):
    kd = dict(KD, teacher='head.fc', student='head')
    with pytest.raises(type(error)) as raised:
        build(teacher_ckpt, tap_pairs=[kd], architecture=FailingStudent(error))
    assert raised.value is error and raised.value.args == error.args
    assert "raised by the student's forward" in raised.value.__notes__[0]


# -- the other user mistakes of the algorithm and the builder --------------------------------
def test_algorithm_and_builder_mistakes_are_user_errors(teacher_ckpt):
    with pytest.raises(ConfigError, match="teacher_norm_mode must be one of"):
        build(teacher_ckpt, teacher_norm_mode='frozen')
    with pytest.raises(ConfigError, match='the teacher has no weights: set teacher_ckpt='):
        build(None)
    with pytest.raises(KeyError, match='needs `type` or `cfg_path`') as error:
        build(teacher_ckpt, architecture=dict(backbone=dict(type='ResNet', depth=18)))
    assert isinstance(error.value, ConfigError)
    with pytest.raises(NameNotFoundError, match=r"'ImageClassifer' is not registered in scope "
                                                r"'mmpretrain'\. Did you mean one of "
                                                r"\['ImageClassifier'"):
        build(teacher_ckpt, architecture=dict(STUDENT, type='mmpretrain.ImageClassifer'))
    with pytest.raises(ConfigError, match="student: expected a model config dict"):
        build(teacher_ckpt, architecture=torch.zeros(1))
    with pytest.raises(ModuleImportError, match=r"scope 'mmpretrian'.*Did you mean one of "
                                                r"\['mmpretrain'"):
        build(teacher_ckpt, architecture=dict(STUDENT, type='mmpretrian.ImageClassifier'))

    algorithm = build(teacher_ckpt, calculate_student_loss=False)
    algorithm.distillation_enabled = False  # as DistillSwitchHook does
    with pytest.raises(ConfigRuntimeError, match='nothing to train.*calculate_student_loss=True'):
        algorithm.loss(torch.randn(2, 3, 32, 32), None)
