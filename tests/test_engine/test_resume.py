"""Resume through tools/train.py's code path: bit-exact on the CPU with the shipped digits
configs' random augmentation, and refused before training when the checkpoint does not fit the
run (keys, shapes, optimizer, schedule)."""
import os

import pytest
import torch
from mmengine.config import Config

from helpers import config_path, save_checkpoint_of, train
from mmkd.apis.train import build_train_runner
from mmkd.registry import MODELS
from mmkd.utils.errors import CheckpointMismatchError, UserFileNotFoundError

KD = config_path('digits/kd_resnet18_w32_w4.py')


@pytest.fixture
def one_thread_deterministic():
    """One thread (the order of floating-point sums is fixed); deterministic algorithms are
    switched off again afterwards (mmengine's set_random_seed switches them on)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def teacher_ckpt(tmp_path) -> str:
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    return save_checkpoint_of(teacher_cfg.model.to_dict(), str(tmp_path / 'teacher.pth'))


def options(teacher: str, epochs: int, **extra) -> dict:
    """The shipped config on 10 training images (3 batches per epoch, RandomCrop on),
    validating and saving every second epoch; ``epochs`` changed the way a user does."""
    return {
        'model.teacher_ckpt': teacher,
        'train_dataloader.dataset.shots_per_class': 1,
        'train_dataloader.batch_size': 4,
        'train_cfg.max_epochs': epochs,
        'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
        'randomness.deterministic': True,
        **extra,
    }


@pytest.mark.parametrize('config', ['kd_resnet18_w32_w4.py', 'tekap_logit_resnet18_w32_w4.py'])
def test_two_epochs_and_resume_to_four_equal_four_epochs(config, tmp_path,
                                                         one_thread_deterministic):
    # KD draws NumPy's generator (the crops); TeKAP also torch's (its noisy views), and the
    # validation after epoch 2 draws torch's generator in the uninterrupted run only.
    cfg = config_path(f'digits/{config}')
    teacher = teacher_ckpt(tmp_path)
    full = train(cfg, str(tmp_path / 'full'), options(teacher, epochs=4))
    train(cfg, str(tmp_path / 'resumed'), options(teacher, epochs=2))
    resumed = train(cfg, str(tmp_path / 'resumed'), options(teacher, epochs=4), resume='auto')

    assert full.iter == resumed.iter == 12 and resumed.epoch == 4
    assert resumed.optim_wrapper.get_lr() == full.optim_wrapper.get_lr()
    full_state = full.model.student.state_dict()
    for key, value in resumed.model.student.state_dict().items():
        assert torch.equal(value, full_state[key]), f'{key} differs after resume'


NO_VALIDATION = {'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None}


def kd_run_with_student_checkpoints(tmp_path):
    """One epoch of the KD config with the student-only checkpoint hook."""
    teacher = teacher_ckpt(tmp_path)
    hooks = [dict(type='mmkd.StudentCheckpointHook', interval=1)]
    work = tmp_path / 'kd'
    train(KD, str(work), options(teacher, epochs=1, custom_hooks=hooks, **NO_VALIDATION,
                                 **{'default_hooks.checkpoint.interval': 1}))
    return teacher, work


def assert_nothing_trained(work_dir) -> None:
    assert not [name for name in os.listdir(work_dir) if name.endswith('.pth')]


def test_resume_and_load_from_refuse_a_checkpoint_that_does_not_fit(tmp_path):
    teacher, work = kd_run_with_student_checkpoints(tmp_path)
    student_only, distillation = work / 'student_epoch_1.pth', work / 'epoch_1.pth'
    other = tmp_path / 'other'
    with pytest.raises(CheckpointMismatchError) as error:  # a student export "resumed"
        train(KD, str(other), options(teacher, epochs=2, **NO_VALIDATION),
              resume=str(student_only))
    message = str(error.value)
    assert f'cannot resume from {student_only}' in message
    assert 'missing keys' in message and "'student.backbone.conv1.weight'" in message
    assert 'unexpected keys' in message and 'student alone' in message and 'Fix:' in message
    assert_nothing_trained(other)

    # another method's checkpoint: FitNets has a connector the KD checkpoint lacks
    with pytest.raises(CheckpointMismatchError, match=r'missing keys.*distiller\.connectors'):
        train(config_path('digits/fitnets_resnet18_w32_w4.py'), str(other),
              options(teacher, epochs=2, **NO_VALIDATION), resume=str(distillation))
    assert_nothing_trained(other)

    # load_from is strict too
    with pytest.raises(CheckpointMismatchError, match='cannot load_from .*student alone'):
        train(KD, str(other), options(teacher, epochs=1, load_from=str(student_only),
                                      **NO_VALIDATION))
    assert_nothing_trained(other)

    # the advice of the message works: the student takes the student-only file
    cfg = Config.fromfile(KD)
    cfg.model.teacher_ckpt = teacher
    cfg.model.architecture.init_cfg = dict(type='Pretrained', checkpoint=str(student_only))
    model = MODELS.build(cfg.model)
    model.init_weights()
    saved = torch.load(student_only, weights_only=True)
    assert all(torch.equal(v, saved['state_dict'][k])
               for k, v in model.student.state_dict().items())
    # the student checkpoint hook counts the epochs done, as the run's own checkpoint does
    assert saved['meta']['epoch'] == torch.load(distillation, weights_only=True)['meta'][
        'epoch'] == 1


def test_resume_refuses_a_changed_schedule_or_optimizer(tmp_path):
    teacher, work = kd_run_with_student_checkpoints(tmp_path)
    checkpoint = str(work / 'epoch_1.pth')
    # a scheduler whose end follows max_epochs (no explicit end), resumed with more epochs:
    # mmengine would keep the checkpoint's end and the learning rate would stay flat after it
    with pytest.raises(CheckpointMismatchError, match=r'end=60 in the checkpoint, 4 in this'):
        train(KD, str(tmp_path / 'a'),
              options(teacher, epochs=4, **NO_VALIDATION, **{'param_scheduler.end': 4}),
              resume=checkpoint)
    with pytest.raises(CheckpointMismatchError, match=r'parameter groups of sizes \[\d+\]'):
        train(KD, str(tmp_path / 'b'),
              options(teacher, epochs=4, **NO_VALIDATION,
                      **{'optim_wrapper.paramwise_cfg.norm_decay_mult': 0.}),
              resume=checkpoint)


def test_resume_names_a_missing_checkpoint(tmp_path):
    work = tmp_path / 'work'
    os.makedirs(work)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))  # lost by a killed run
    with pytest.raises(UserFileNotFoundError, match='last_checkpoint names .*epoch_3.pth, which '
                       'does not exist'):
        build_train_runner(KD, str(work), resume='auto')
    with pytest.raises(UserFileNotFoundError, match='resume checkpoint .*nope.pth does not'):
        build_train_runner(KD, str(work), resume=str(tmp_path / 'nope.pth'))
