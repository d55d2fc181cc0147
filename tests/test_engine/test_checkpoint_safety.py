"""Checkpoints survive a process killed while saving; exports never overwrite their input;
teacher checkpoints are never unpickled without trust_teacher_ckpt; damaged and missing files
are named with their role."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from helpers import REPO, config_path, run_tool, save_checkpoint_of, tiny_classifier, train
from mmkd.apis.export import check_student_checkpoint, export_student
from mmkd.apis.train import build_train_runner
from mmkd.models import build_model_from_cfg
from mmkd.models.algorithms.teacher import load_teacher_checkpoint
from mmkd.utils.checkpoint import UntrustedCheckpointError, atomic_save
from mmkd.utils.errors import CheckpointError, UserFileExistsError, UserFileNotFoundError

STUDENT = config_path('digits/student_resnet18_w4.py')
KD = config_path('digits/kd_resnet18_w32_w4.py')
SMALL = {'train_dataloader.dataset.shots_per_class': 1, 'train_dataloader.batch_size': 5,
         'train_cfg.max_epochs': 3, 'default_hooks.checkpoint.interval': 1}
NO_VALIDATION = {'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None}

# Imported by the killed run's config (custom_imports): a metric that improves at every
# validation, and a hook that kills the process while a checkpoint is pickled.
KILLER = '''
import os
import signal

from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, METRICS


class KillWhenPickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


@METRICS.register_module()
class ImprovingMetric(BaseMetric):
    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        ImprovingMetric.calls += 1
        return dict(calls=ImprovingMetric.calls)


@HOOKS.register_module()
class KillWhileSavingHook(Hook):
    """SIGKILL inside torch.save of the `number`-th checkpoint of a kind (`best`: those saved
    without the optimizer)."""

    def __init__(self, number, best=False):
        self.number, self.best, self.seen = number, best, 0

    def before_save_checkpoint(self, runner, checkpoint):
        if ('optimizer' not in checkpoint) == self.best:
            self.seen += 1
            if self.seen == self.number:
                checkpoint['kill'] = KillWhenPickled()
'''


def killed_run(tmp_path, work, best: bool) -> subprocess.CompletedProcess:
    """tools/train.py on the digits student, SIGKILLed while it writes its second regular
    (or best) checkpoint."""
    (tmp_path / 'killer.py').write_text(KILLER)
    config = tmp_path / 'killed_config.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = [{STUDENT!r}]
        custom_imports = dict(imports=['killer'], allow_failed_imports=False)
        custom_hooks = [dict(type='KillWhileSavingHook', number=2, best={best})]
        val_evaluator = dict(_delete_=True, type='ImprovingMetric')
        val_dataloader = dict(dataset=dict(shots_per_class=1))
        train_cfg = dict(val_interval=1)
        default_hooks = dict(checkpoint=dict(save_best={'calls' if best else None!r},
                                             rule='greater'))
    '''))
    options = [f'{key}={value}' for key, value in SMALL.items()]
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get('PYTHONPATH')) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'train.py'), str(config),
                           '--work-dir', str(work), '--cfg-options', *options],
                          capture_output=True, text=True, env=env, timeout=600)


def pth_files(work):
    return sorted(name for name in os.listdir(work) if name.endswith('.pth'))


@pytest.mark.parametrize('best', [False, True], ids=['regular', 'best'])
def test_a_run_killed_while_saving_keeps_its_last_checkpoint_and_resumes(best, tmp_path):
    work = tmp_path / 'work'
    result = killed_run(tmp_path, work, best)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    # max_keep_ckpts=1 (the digits base): epoch_1 is kept until epoch_2 is complete
    expected = ['best_calls_epoch_1.pth', 'epoch_2.pth'] if best else ['epoch_1.pth']
    assert pth_files(work) == expected
    last = (work / 'last_checkpoint').read_text()
    assert last == str(work / expected[-1])
    for name in expected:  # complete files
        torch.load(work / name, weights_only=True)

    if not best:  # a write killed once its temporary file exists leaves the target as it was
        before = (work / expected[-1]).read_bytes()
        script = ('import os, signal, sys, torch\n'
                  'from mmkd.utils.checkpoint import atomic_save\n'
                  'class Kill:\n'
                  '    def __reduce__(self):\n'
                  '        os.kill(os.getpid(), signal.SIGKILL)\n'
                  'atomic_save({"w": torch.ones(3), "kill": Kill()}, sys.argv[1])\n')
        killed = subprocess.run([sys.executable, '-c', script, last], capture_output=True)
        assert killed.returncode == -signal.SIGKILL
        assert (work / expected[-1]).read_bytes() == before
        assert any(name.endswith('.partial') for name in os.listdir(work))

    runner = train(STUDENT, str(work), dict(SMALL, **NO_VALIDATION), resume='auto')
    assert runner.epoch == 3
    assert 'epoch_3.pth' in pth_files(work) and 'epoch_2.pth' not in pth_files(work)
    assert not any(name.endswith('.partial') for name in os.listdir(work))
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_3.pth')


class Unpicklable:

    def __reduce__(self):
        raise RuntimeError('cannot pickle this')


def test_atomic_save_replaces_whole_files_only(tmp_path):
    target = tmp_path / 'sub' / 'file.pth'
    atomic_save({'a': torch.ones(2)}, str(target))
    with pytest.raises(RuntimeError, match='cannot pickle'):  # the previous file stays
        atomic_save({'a': torch.zeros(2), 'bad': Unpicklable()}, str(target))
    assert torch.equal(torch.load(target, weights_only=True)['a'], torch.ones(2))
    assert os.listdir(target.parent) == ['file.pth']


# -- tools/export_student.py ----------------------------------------------------------------
@pytest.fixture
def distill_ckpt(tmp_path):
    path = tmp_path / 'run' / 'epoch_1.pth'
    os.makedirs(path.parent)
    torch.save({'state_dict': {'student.w': torch.ones(2), 'teacher.w': torch.zeros(2)},
                'meta': {'epoch': 1}}, path)
    return path


@pytest.mark.parametrize('spelling', ['same path spelled differently', 'symlink', 'hard link'])
def test_export_refuses_to_overwrite_its_input(spelling, distill_ckpt, tmp_path):
    before = distill_ckpt.read_bytes()
    if spelling == 'symlink':
        out = tmp_path / 'link.pth'
        os.symlink(distill_ckpt, out)
    elif spelling == 'hard link':
        out = tmp_path / 'hard.pth'
        os.link(distill_ckpt, out)
    else:
        out = tmp_path / 'run' / '..' / 'run' / '.' / 'epoch_1.pth'
    for force in (False, True):
        with pytest.raises(UserFileExistsError, match='is the distillation checkpoint'):
            export_student(str(distill_ckpt), str(out), force=force)
    assert distill_ckpt.read_bytes() == before


def test_export_replaces_an_existing_file_only_with_force(distill_ckpt, tmp_path, capsys):
    out = tmp_path / 'student.pth'
    out.write_bytes(b'keep me')
    with pytest.raises(UserFileExistsError, match='already exists.*--force'):
        export_student(str(distill_ckpt), str(out))
    assert out.read_bytes() == b'keep me'
    run_tool('tools/export_student.py', [distill_ckpt, out, '--force'])
    exported = torch.load(out, weights_only=True)
    assert list(exported['state_dict']) == ['w'] and exported['meta']['epoch'] == 1
    assert sorted(os.listdir(tmp_path)) == ['run', 'student.pth']  # no temporary file left


# -- teacher checkpoints and trusted directories --------------------------------------------
class CreateFileWhenUnpickled:
    """Unpickling this runs ``open(path, 'w')``: the file appears if the code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


@pytest.fixture(scope='module')
def teacher_state(tmp_path_factory) -> dict:
    """A checkpoint of the KD config's teacher, with random weights."""
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py')).model.to_dict()
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    return torch.load(save_checkpoint_of(teacher_cfg, path), weights_only=True)


@pytest.mark.parametrize('place', ['work dir', '--resume folder', 'trusted dirs variable'])
def test_teacher_checkpoint_is_not_unpickled_in_a_trusted_directory(place, teacher_state,
                                                                    tmp_path, monkeypatch):
    folder = tmp_path / 'folder'
    os.makedirs(folder)
    teacher = folder / 'teacher.pth'
    state = dict(teacher_state)
    marker = tmp_path / 'code_ran'
    state['payload'] = CreateFileWhenUnpickled(str(marker))
    torch.save(state, teacher)
    work, resume = tmp_path / 'work', None
    if place == 'work dir':
        work = folder
    elif place == '--resume folder':
        resume = str(folder / 'epoch_1.pth')
        torch.save({}, resume)
    else:
        monkeypatch.setenv('MMKD_TRUSTED_CHECKPOINT_DIRS', str(folder))

    with pytest.raises(UntrustedCheckpointError) as error:
        build_train_runner(KD, str(work), resume=resume,
                           cfg_options={'model.teacher_ckpt': str(teacher)})
    assert not marker.exists()
    message = str(error.value)
    assert f'teacher checkpoint {teacher}' in message and 'trust_teacher_ckpt=True' in message
    assert 'do not apply' in message
    assert isinstance(error.value, CheckpointError)  # a user mistake, printed without traceback


# -- damaged and missing files --------------------------------------------------------------
def damaged(tmp_path, kind: str) -> str:
    path = tmp_path / f'{kind}.pth'
    if kind == 'truncated':
        whole = tmp_path / 'whole.pth'
        torch.save({'state_dict': {'student.w': torch.ones(1000)}}, whole)
        data = whole.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'text':
        path.write_text('<html>404 Not Found</html>')
    else:
        path.write_bytes(b'')
    return str(path)


@pytest.mark.parametrize('kind', ['truncated', 'text', 'empty'])
def test_damaged_checkpoints_are_named_with_their_role(kind, tmp_path):
    path = damaged(tmp_path, kind)
    loads = {
        'teacher checkpoint': lambda: load_teacher_checkpoint(
            build_model_from_cfg(tiny_classifier(4)), path),
        'distillation checkpoint': lambda: export_student(path, str(tmp_path / 'out.pth')),
        'student checkpoint': lambda: check_student_checkpoint(STUDENT, path),
        'checkpoint': lambda: load_checkpoint(build_model_from_cfg(tiny_classifier(4)), path),
    }
    for role, load in loads.items():
        with pytest.raises(CheckpointError,
                           match=f'^{role} {path} is truncated or not a PyTorch checkpoint'):
            load()


def test_resume_from_a_damaged_or_missing_checkpoint_fails_before_training(tmp_path):
    path = damaged(tmp_path, 'truncated')
    work = tmp_path / 'work'
    with pytest.raises(CheckpointError,
                       match=f'resume checkpoint {path} is truncated or not a PyTorch'):
        train(STUDENT, str(work), dict(SMALL, **NO_VALIDATION), resume=path)
    assert pth_files(work) == []
    with pytest.raises(UserFileNotFoundError, match='teacher checkpoint .*absent.pth does not'):
        load_teacher_checkpoint(build_model_from_cfg(tiny_classifier(4)),
                                str(tmp_path / 'absent.pth'))
