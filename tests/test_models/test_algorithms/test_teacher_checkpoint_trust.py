"""Checkpoints named in a config's model dicts load under the same trust rules as the others: a
teacher's ``pretrained=<path>`` like its ``teacher_ckpt`` (never unpickled in a trusted
directory, only with ``trust_teacher_ckpt=True``), and tools/test.py's checkpoint is named as
the test checkpoint in the messages of its load."""
import os

import pytest
import torch
from mmengine.config import Config

from helpers import config_path, save_checkpoint_of, tiny_classifier
from mmkd.apis.test import build_test_runner
from mmkd.registry import MODELS
from mmkd.utils.checkpoint import UntrustedCheckpointError
from mmkd.utils.errors import CheckpointError

TEACHER_CONFIG = config_path('digits/teacher_resnet18_w32.py')
KD_CONFIG = config_path('digits/kd_resnet18_w32_w4.py')


class CreateFileWhenUnpickled:
    """Unpickling it creates a file: code from a checkpoint ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def algorithm_cfg(pretrained: str, **kwargs) -> dict:
    """A FitNets distillation whose teacher is the digits teacher with ``pretrained=``."""
    return dict(type='SingleTeacherDistill', architecture=tiny_classifier(width=4),
                teacher=dict(cfg_path=TEACHER_CONFIG, pretrained=pretrained),
                dry_run_shape=(3, 32, 32),
                distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
                    name='hint', student='backbone.layer2', teacher='backbone.layer2',
                    student_connector=dict(type='ConvBNConnector'),
                    loss=dict(type='FitNetsLoss'))]), **kwargs)


@pytest.fixture
def payload_teacher(tmp_path):
    """(path, state dict, marker) of a teacher checkpoint that also pickles code."""
    teacher = Config.fromfile(TEACHER_CONFIG).model.to_dict()
    state = torch.load(save_checkpoint_of(teacher, str(tmp_path / 'plain.pth')),
                       weights_only=True)
    folder = tmp_path / 'teacher'
    os.makedirs(folder)
    marker = tmp_path / 'code_ran'
    path = folder / 'teacher.pth'
    torch.save(dict(state, payload=CreateFileWhenUnpickled(str(marker))), path)
    return str(path), state['state_dict'], marker


def test_teacher_pretrained_path_is_not_unpickled_in_a_trusted_directory(payload_teacher,
                                                                         monkeypatch):
    path, _, marker = payload_teacher
    monkeypatch.setenv('MMKD_TRUSTED_CHECKPOINT_DIRS', os.path.dirname(path))
    with pytest.raises(UntrustedCheckpointError) as error:
        MODELS.build(algorithm_cfg(path))
    assert not marker.exists()
    message = str(error.value)
    assert f'teacher checkpoint {path}' in message and 'trust_teacher_ckpt=True' in message
    assert 'do not apply' in message


def test_teacher_pretrained_path_loads_with_trust_teacher_ckpt_or_weights_only(
        payload_teacher, tmp_path):
    path, state, marker = payload_teacher
    algorithm = MODELS.build(algorithm_cfg(path, trust_teacher_ckpt=True))
    assert marker.exists()  # the user trusted the file: it was fully unpickled
    teacher_state = algorithm.teacher.state_dict()
    assert all(torch.equal(teacher_state[key], value) for key, value in state.items())

    plain = str(tmp_path / 'plain.pth')  # weights only: loads without trust, strictly
    algorithm = MODELS.build(algorithm_cfg(plain))
    teacher_state = algorithm.teacher.state_dict()
    assert all(torch.equal(teacher_state[key], value) for key, value in state.items())


def test_a_damaged_test_checkpoint_is_named_as_the_test_checkpoint(tmp_path):
    whole = tmp_path / 'whole.pth'
    torch.save({'state_dict': {'student.w': torch.ones(1000)}}, whole)
    data = whole.read_bytes()
    path = tmp_path / 'truncated.pth'
    path.write_bytes(data[:len(data) // 2])
    runner = build_test_runner(KD_CONFIG, str(path), work_dir=str(tmp_path / 'work'))
    with pytest.raises(CheckpointError,
                       match=f'^test checkpoint {path} is truncated or not a PyTorch checkpoint'):
        runner.test()
