"""A user mistake ends in one message and exit status 2, without a traceback; ``--debug`` or
``MMKD_DEBUG=1`` shows the traceback; a crash keeps it (exit status 1).

The real tools run as subprocesses on a few mistakes (each costs seconds of imports); the rest
call the tools' ``main`` through :func:`mmkd.utils.cli.run_cli` in this process."""
import os
import os.path as osp
import runpy
import subprocess
import sys
import textwrap

import pytest
from mmengine.config import Config

from helpers import REPO, config_path, save_checkpoint_of
from mmkd.utils.cli import run_cli
from mmkd.utils.errors import UserFileNotFoundError

HINT = 'run with --debug or MMKD_DEBUG=1 for the traceback'


@pytest.fixture
def cli_env(monkeypatch):
    """A clean environment for a tool run in this process; restored afterwards (the tools set
    ``LOCAL_RANK``, ``--debug`` sets ``MMKD_DEBUG``)."""
    for name in ('MMKD_DEBUG', 'LOCAL_RANK', 'RANK', 'SLURM_LOCALID'):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def run_in_process(monkeypatch, capsys, tool: str, *argv):
    """``run_cli(main)`` of ``tools/<tool>`` with ``argv``; returns (exit status, stderr)."""
    main = runpy.run_path(osp.join(REPO, 'tools', tool), run_name='mmkd_tool')['main']
    monkeypatch.setattr(sys, 'argv', [osp.join('tools', tool), *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    return exit_info.value.code, capsys.readouterr().err


def run_process(tool: str, *argv, env=None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != 'MMKD_DEBUG'}
    environ.update(env or {})
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', tool), *map(str, argv)],
                          capture_output=True, text=True, timeout=600, env=environ)


def assert_one_message(result: subprocess.CompletedProcess, tool: str, *parts: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    block = result.stderr[result.stderr.index(f'{tool}: error: '):]
    assert block.rstrip().endswith(f'{HINT})'), block
    for part in parts:
        assert part in block, block


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    return save_checkpoint_of(teacher_cfg.model.to_dict(), str(path))


# -- the real tools, in subprocesses ------------------------------------------------------------
def test_unknown_tap_module_is_one_message_and_debug_shows_the_traceback(tmp_path, teacher_ckpt):
    config = tmp_path / 'typo_tap.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = [{config_path('digits/kd_resnet18_w32_w4.py')!r}]
        model = dict(teacher_ckpt={teacher_ckpt!r}, distiller=dict(tap_pairs=[
            dict(name='hint', student='backbone.layer5', teacher='backbone.layer4',
                 recorder='PreReLU', loss=dict(type='FitNetsLoss'))]))
        '''))
    argv = ('train.py', config, '--work-dir', tmp_path / 'work')
    assert_one_message(run_process(*argv), 'train.py',
                       "student has no module named 'backbone.layer5'", "'backbone.layer4'",
                       'tools/list_taps.py')
    debug = run_process(*argv, '--debug')
    assert debug.returncode == 1
    assert 'Traceback' in debug.stderr and 'NameNotFoundError' in debug.stderr
    assert 'train.py: error:' not in debug.stderr


def test_missing_config_files(tmp_path):
    assert_one_message(run_process('train.py', config_path('digits/kd_resnet18_w32_w4_typo.py')),
                       'train.py', 'kd_resnet18_w32_w4_typo.py', 'does not exist',
                       "'kd_resnet18_w32_w4.py'")
    assert_one_message(run_process('list_taps.py', tmp_path / 'nowhere' / 'model.py'),
                       'list_taps.py', 'nowhere/model.py', 'does not exist')


def test_a_bug_in_model_code_keeps_its_traceback(tmp_path):
    (tmp_path / 'buggy_net.py').write_text(textwrap.dedent('''
        import torch.nn as nn
        from mmengine.model import BaseModel

        from mmkd.registry import MODELS


        @MODELS.register_module()
        class BuggyNet(BaseModel):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)
                self.relu = nn.ReLU()

            def forward(self, inputs, data_samples=None, mode='tensor'):
                return self.relu(self.cnov(inputs))  # the typo is the bug
        '''))
    config = tmp_path / 'buggy.py'
    config.write_text("custom_imports = dict(imports=['buggy_net'])\n"
                      "default_scope = 'mmkd'\nmodel = dict(type='BuggyNet')\n")
    result = run_process('list_taps.py', config, '--input-shape', 3, 8, 8,
                         env=dict(PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO}'))
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert 'Traceback' in result.stderr and "has no attribute 'cnov'" in result.stderr
    assert 'list_taps.py: error:' not in result.stderr


# -- the tools' main through run_cli, in this process -----------------------------------------
def test_missing_teacher_checkpoint_and_resume_path(tmp_path, cli_env, capsys):
    status, err = run_in_process(
        cli_env, capsys, 'train.py', config_path('digits/kd_resnet18_w32_w4.py'),
        '--work-dir', tmp_path / 'work', '--cfg-options',
        f'model.teacher_ckpt={tmp_path}/nowhere/teacher.pth')
    assert status == 2 and err.startswith('train.py: error: ') and 'Traceback' not in err
    assert 'teacher checkpoint' in err and f'{tmp_path}/nowhere/teacher.pth' in err

    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'epoch_1.pth').touch()
    status, err = run_in_process(cli_env, capsys, 'train.py',
                                 config_path('digits/kd_resnet18_w32_w4.py'),
                                 '--resume', tmp_path / 'run' / 'epoch_l.pth')
    assert status == 2 and err.startswith(f'train.py: error: --resume checkpoint {tmp_path}')
    assert "Did you mean one of ['epoch_1.pth']?" in err

    status, err = run_in_process(cli_env, capsys, 'test.py',
                                 config_path('digits/student_resnet18_w4.py'),
                                 tmp_path / 'run' / 'epoch_2.pth')
    assert status == 2 and 'test.py: error: checkpoint' in err and 'epoch_2.pth' in err


def test_launcher_without_torchrun(tmp_path, cli_env, capsys):
    status, err = run_in_process(cli_env, capsys, 'train.py',
                                 config_path('digits/student_resnet18_w4.py'),
                                 '--work-dir', tmp_path, '--launcher', 'pytorch')
    assert status == 2 and 'RANK environment variable is not' in err
    assert 'tools/dist_train.sh' in err


def test_list_taps_and_digits_demo_mistakes(cli_env, capsys):
    status, err = run_in_process(cli_env, capsys, 'list_taps.py',
                                 'mmpretrain::resnet/resnet18_8xb32_in1k.py', '--teacher',
                                 '--input-shape', 3, 32, 32)
    assert status == 2 and 'not a distillation config' in err and 'drop --student' in err
    status, err = run_in_process(cli_env, capsys, 'digits_demo.py', '--methods', 'kdd')
    assert status == 2 and "unknown digits methods ['kdd']" in err and '--list' in err


def test_debug_flag_and_environment_let_the_error_through(tmp_path, cli_env, capsys):
    missing = tmp_path / 'x.pth'
    with pytest.raises(UserFileNotFoundError, match='x.pth'):
        run_in_process(cli_env, capsys, 'test.py', 'c.py', missing, '--debug')
    assert os.environ['MMKD_DEBUG'] == '1'  # for the processes the tool starts
    cli_env.setenv('MMKD_DEBUG', '1')
    with pytest.raises(FileNotFoundError, match='x.pth'):
        run_in_process(cli_env, capsys, 'test.py', 'c.py', missing)


def test_only_the_first_process_of_a_machine_prints(tmp_path, cli_env, capsys):
    cli_env.setenv('LOCAL_RANK', '1')
    status, err = run_in_process(cli_env, capsys, 'test.py', 'c.py', tmp_path / 'x.pth')
    assert status == 2 and err == ''
    cli_env.setenv('LOCAL_RANK', '0')
    cli_env.setenv('RANK', '3')  # the first process of the second machine
    status, err = run_in_process(cli_env, capsys, 'test.py', 'c.py', tmp_path / 'x.pth')
    assert status == 2 and 'x.pth' in err


@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'list_taps.py', 'digits_demo.py'])
def test_help_explains_debug_and_the_exit_statuses(tool, cli_env, capsys):
    main = runpy.run_path(osp.join(REPO, 'tools', tool), run_name='mmkd_tool')['main']
    cli_env.setattr(sys, 'argv', [tool, '--help'])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    out = ' '.join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert '--debug' in out and 'exit status 2' in out and 'MMKD_DEBUG=1' in out


def exit_status_and_message(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    return exit_info.value.code, capsys.readouterr().err


def test_a_type_missing_from_a_registry(cli_env, capsys):
    """mmengine's own error for an unknown ``type``, with the registered names that look
    like it; a KeyError raised elsewhere stays a crash."""
    from mmkd.registry import MODELS, OPTIM_WRAPPERS
    cli_env.setattr(sys, 'argv', ['tools/x.py'])
    status, err = exit_status_and_message(lambda: MODELS.build(dict(type='FitNetLoss')), capsys)
    assert status == 2 and err.startswith('x.py: error: FitNetLoss is not in the mmkd::model '
                                          "registry. Did you mean one of ['FitNetsLoss'")
    status, err = exit_status_and_message(
        lambda: OPTIM_WRAPPERS.build(dict(type='AmpOptimWraper')), capsys)
    assert status == 2 and "Did you mean one of ['AmpOptimWrapper'" in err
    with pytest.raises(KeyError, match='is not in the mmkd::model registry'):
        run_cli(lambda: {}['FitNetLoss is not in the mmkd::model registry.'])
