"""tools/test.py's runner (mmkd.apis.test.build_test_runner): strict loading, the student of a
distillation checkpoint under the stock student config, and no teacher checkpoint needed."""
import glob
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample

from helpers import config_path, save_checkpoint_of, tiny_classifier
from mmkd.apis.export import student_checkpoint
from mmkd.apis.test import build_test_runner
from mmkd.registry import MODELS
from mmkd.utils.errors import CheckpointMismatchError, ConfigError

KD_CONFIG = config_path('digits/kd_resnet18_w32_w4.py')
OFD_CONFIG = config_path('digits/ofd_resnet18_w32_w4.py')
STUDENT_CONFIG = config_path('digits/student_resnet18_w4.py')
TEACHER_CONFIG = config_path('digits/teacher_resnet18_w32.py')


def distillation_checkpoint(config, folder, seed=3):
    """Build the algorithm of ``config`` with a seeded random teacher checkpoint and student,
    and save its state as a run would (``{'state_dict': ..., 'meta': ...}``)."""
    teacher = Config.fromfile(TEACHER_CONFIG).model.to_dict()
    model_cfg = Config.fromfile(config).model.to_dict()
    model_cfg['teacher_ckpt'] = save_checkpoint_of(teacher, str(folder / 'teacher.pth'))
    torch.manual_seed(seed)
    algorithm = MODELS.build(model_cfg)
    algorithm.init_weights()
    path = folder / f'{osp.basename(config)}.pth'
    torch.save({'state_dict': algorithm.state_dict(), 'meta': {'epoch': 1}}, path)
    return str(path), algorithm


def run_test(config, checkpoint, work_dir, cfg_options=None):
    """Test like tools/test.py; returns the runner, the metrics and the predicted scores."""
    dump = osp.join(work_dir, 'predictions.pkl')
    runner = build_test_runner(config, checkpoint, work_dir=work_dir, out=dump,
                               cfg_options=cfg_options)
    metrics = runner.test()
    with open(dump, 'rb') as file:
        scores = torch.stack([torch.as_tensor(s['pred_score']) for s in pickle.load(file)])
    return runner, metrics, scores


def log_lines(runner, text):
    lines = []
    for log in glob.glob(osp.join(runner.log_dir, '*.log')):
        with open(log) as file:
            lines += [line for line in file if text in line]
    return lines


def assert_state_equal(module, expected):
    state = module.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize('prefix', ['student.', 'architecture.'])
def test_stock_student_config_loads_the_student_of_a_distillation_checkpoint(
        prefix, tmp_path):
    """mmkd's ``student.`` keys and MMRazor's ``architecture.`` keys: the stock student config
    tests exactly the student that the distillation config tests (no teacher file needed)."""
    checkpoint, algorithm = distillation_checkpoint(KD_CONFIG, tmp_path)
    if prefix != 'student.':  # an MMRazor checkpoint: architecture.*, teacher.*, distiller.*
        state = torch.load(checkpoint, weights_only=True)['state_dict']
        state = {(prefix + k[len('student.'):] if k.startswith('student.') else k): v
                 for k, v in state.items()}
        checkpoint = str(tmp_path / 'mmrazor.pth')
        torch.save({'state_dict': state}, checkpoint)

    student_runner, student_metrics, student_scores = run_test(
        STUDENT_CONFIG, checkpoint, str(tmp_path / 'student'))
    assert_state_equal(student_runner.model, algorithm.student.state_dict())
    lines = log_lines(student_runner, 'is a distillation checkpoint')
    assert len(lines) == 1 and 'loaded its student' in lines[0] and checkpoint in lines[0]

    if prefix == 'student.':
        missing_teacher = {'model.teacher_ckpt': str(tmp_path / 'no_such_teacher.pth')}
        _, distill_metrics, distill_scores = run_test(KD_CONFIG, checkpoint,
                                                      str(tmp_path / 'distill'), missing_teacher)
        assert student_metrics == distill_metrics
        torch.testing.assert_close(student_scores, distill_scores, rtol=0, atol=0)


def test_mismatching_checkpoints_are_errors_naming_file_and_keys(tmp_path):
    checkpoint, algorithm = distillation_checkpoint(KD_CONFIG, tmp_path)
    exported = tmp_path / 'student.pth'
    torch.save(student_checkpoint(torch.load(checkpoint, weights_only=True)), exported)
    # the matching pair (exported student, stock student config) loads, strictly
    runner, _, _ = run_test(STUDENT_CONFIG, str(exported), str(tmp_path / 'test'))
    assert_state_equal(runner.model, algorithm.student.state_dict())
    assert not log_lines(runner, 'is a distillation checkpoint')

    # an exported student with the distillation config: only the student's keys are there
    runner = build_test_runner(KD_CONFIG, str(exported), work_dir=str(tmp_path / 'a'),
                               cfg_options={'model.teacher_ckpt': None})
    with pytest.raises(CheckpointMismatchError, match=(
            r'student\.pth does not match .*kd_resnet18_w32_w4\.py \(SingleTeacherDistill\): '
            r"missing keys: \d+ \(e\.g\. \['student\..*; "
            r"unexpected keys: \d+ \(e\.g\. \['backbone\..*It holds a student alone")):
        runner.test()

    # the teacher's checkpoint with the student's config: same keys, other shapes
    teacher = str(tmp_path / 'teacher.pth')
    runner = build_test_runner(STUDENT_CONFIG, teacher, work_dir=str(tmp_path / 'b'))
    with pytest.raises(KeyError, match=(
            r'teacher\.pth does not match the model of .*student_resnet18_w4\.py '
            r'\(ImageClassifier\): missing keys: 0; unexpected keys: 0; keys of another shape '
            r"\(checkpoint vs model\): \d+ \(e\.g\. \['backbone\.conv1\.weight: "
            r'\(32, 3, \d+, \d+\) vs \(4, 3, \d+, \d+\)')):
        runner.test()

    # one extra tensor: unexpected, counted
    state = torch.load(exported, weights_only=True)
    state['state_dict']['head.fc.extra'] = torch.zeros(1)
    extra = tmp_path / 'extra.pth'
    torch.save(state, extra)
    runner = build_test_runner(STUDENT_CONFIG, str(extra), work_dir=str(tmp_path / 'c'))
    with pytest.raises(CheckpointMismatchError, match=(
            r"missing keys: 0; unexpected keys: 1 \(e\.g\. \['head\.fc\.extra'\]\)")):
        runner.test()


def test_ofd_checkpoint_tests_without_the_teacher_file_and_keeps_its_margins(tmp_path):
    """In test mode the teacher and the OFD margins (buffers) come from the tested checkpoint,
    not from the teacher checkpoint named in the config (which is missing here)."""
    checkpoint, algorithm = distillation_checkpoint(OFD_CONFIG, tmp_path)
    state = torch.load(checkpoint, weights_only=True)
    margins = [k for k in state['state_dict'] if k.endswith('.margin')]
    assert margins
    for key in margins:  # margins unlike any the teacher's BN would give
        state['state_dict'][key] = -torch.rand_like(state['state_dict'][key])
    torch.save(state, checkpoint)

    runner, _, _ = run_test(OFD_CONFIG, checkpoint, str(tmp_path / 'test'),
                            {'model.teacher_ckpt': str(tmp_path / 'no_such_teacher.pth')})
    assert_state_equal(runner.model, state['state_dict'])
    connectors = [runner.model.distiller.connectors[k.split('.')[2]] for k in margins]
    assert all(bool(connector.margin_ready) and connector._ready for connector in connectors)
    assert runner.model.teacher_has_weights


def test_load_teacher_false_needs_no_teacher_file_and_refuses_to_train_without_weights(tmp_path):
    teacher = tiny_classifier(width=8)
    cfg = dict(type='SingleTeacherDistill', architecture=tiny_classifier(width=4),
               teacher=teacher, teacher_ckpt=str(tmp_path / 'missing.pth'),
               dry_run_shape=(3, 32, 32), load_teacher=False,
               distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
                   name='kd', student='head.fc', loss=dict(type='KDLoss', tau=4))]))
    algorithm = MODELS.build(cfg)
    batch = torch.randn(2, 3, 32, 32), [DataSample().set_gt_label(i) for i in range(2)]
    with pytest.raises(ConfigError, match='built with load_teacher=False'):
        algorithm.loss(*batch)  # a random teacher must not train the student silently
    trained = MODELS.build(dict(cfg, load_teacher=True, teacher_ckpt=save_checkpoint_of(
        teacher, str(tmp_path / 'teacher.pth'))))
    algorithm.load_state_dict(trained.state_dict())
    assert set(algorithm.loss(*batch)) == {'student.loss', 'loss_kd'}
