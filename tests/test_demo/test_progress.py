"""What tools/digits_demo.py prints (mmkd.demo.progress): a progress bar per model, the table and
the plot's path in a few lines, mmengine's logs in each run's log file (and on the terminal with
--verbose), and what a run prints or warns captured into its log file."""
import json
import re
import warnings
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from helpers import config_path, run_tool, save_checkpoint_of
from mmkd.apis.train import build_train_runner
from mmkd.demo.digits import digits_config
from mmkd.demo.progress import TrainingProgress

#: The default demo prints this run's lines plus a bar and a table row per extra model.
LINE_BUDGET = 40
BAR = re.compile(r'^(?P<name>\S+) +━+ epoch (?P<epoch>\d+/\d+) loss \d+\.\d{3} +'
                 r'top-1 (?P<top1>\d+\.\d\d) +took \d+:\d\d:\d\d$')


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """A digits teacher with random weights: the demo evaluates it instead of training one."""
    model = Config.fromfile(config_path('digits/teacher_resnet18_w32.py')).model.to_dict()
    return save_checkpoint_of(model, str(tmp_path_factory.mktemp('teacher') / 'teacher.pth'))


def run_demo(tmp_path, teacher_ckpt, capsys, *extra):
    """Run the demo on 2 images per class for 2 epochs; returns (stdout lines, stderr)."""
    capsys.readouterr()
    run_tool('tools/digits_demo.py',
             ['--epochs', '2', '--shots-per-class', '2', '--teacher-ckpt', teacher_ckpt,
              '--work-dir', tmp_path / 'demo', '--teacher-dir', tmp_path / 'teacher', *extra])
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


def log_file(work_dir: Path) -> str:
    """The text of mmengine's log file (``<work_dir>/<timestamp>/<timestamp>.log``)."""
    (path, ) = work_dir.glob('*/*.log')
    return path.read_text()


def test_demo_prints_a_bar_per_model_the_table_and_the_plot_in_a_few_lines(
        tmp_path, teacher_ckpt, capsys):
    lines, err = run_demo(tmp_path, teacher_ckpt, capsys, '--methods', 'kd')
    assert len(lines) < LINE_BUDGET - 8, '\n'.join(lines)
    assert err == ''  # no warnings on the terminal
    assert not [line for line in lines if ' - mmengine - ' in line]
    report = json.loads((tmp_path / 'demo' / 'results.json').read_text())
    bars = {m['name']: m for m in map(BAR.match, lines) if m}
    assert list(bars) == ['baseline', 'kd']
    for run in report['runs']:  # each bar ends on the run's last validation
        assert bars[run['name']]['epoch'] == '2/2'
        assert bars[run['name']]['top1'] == f'{run["top1"]:.2f}'
    table = (tmp_path / 'demo' / 'results.md').read_text().strip()
    assert table in '\n'.join(lines)
    png = tmp_path / 'demo' / 'curves.png'
    assert f'Validation curves: {png}' in lines
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # mmengine's logs are in each run's log file, as without the progress display
    log = log_file(tmp_path / 'demo' / 'kd' / 'seed0')
    assert 'Config:' in log and 'Epoch(train) [2][1/1]' in log and 'Epoch(val) [2]' in log
    # mmengine prints the teacher's "Loads checkpoint" line: it goes to the evaluation's log
    assert not [line for line in lines if 'Loads checkpoint' in line]
    assert f'Loads checkpoint by _local backend from path: {teacher_ckpt}' in log_file(
        tmp_path / 'teacher' / 'eval')


def test_verbose_prints_mmengine_logs_above_the_bars(tmp_path, teacher_ckpt, capsys):
    lines, _ = run_demo(tmp_path, teacher_ckpt, capsys, '--methods', 'baseline', '--verbose')
    text = '\n'.join(lines)
    assert 'Config:' in text and 'Epoch(val) [2]' in text
    assert re.search(r' - mmengine - .*Epoch\(train\) \[2\]\[1/1\] .* loss: ', text)
    assert [m['name'] for m in map(BAR.match, lines) if m] == ['baseline']
    assert len(lines) > 100


def test_what_a_run_prints_or_warns_goes_to_its_log_file(tmp_path, capsys):
    cfg = digits_config('digits/student_resnet18_w4.py', epochs=1, shots_per_class=1)
    progress = TrainingProgress()
    with progress.track('student') as track:  # RuntimeWarning: pytest.ini ignores UserWarning
        warnings.warn('raised while the runner is built', RuntimeWarning)
        other = MMLogger.get_instance(f'other_{tmp_path.name}')  # logs to the terminal only
        other.info('logged by another logger')
        runner = track.build(lambda: build_train_runner(cfg, work_dir=str(tmp_path)))
        print('printed by the run')
        warnings.warn('raised by the run', RuntimeWarning)
        runner.logger.error('an error of the run')
    out, err = capsys.readouterr()
    assert err == ''
    log = log_file(tmp_path)
    for text in ('raised while the runner is built', 'logged by another logger',
                 'printed by the run',
                 'raised by the run', 'an error of the run'):
        assert text in log
    assert 'an error of the run' in out  # errors still reach the terminal
    assert 'raised' not in out and 'printed' not in out and 'logged' not in out
    assert 'Config:' not in out
    # the progress bar only starts with the training
    assert not [line for line in out.splitlines() if BAR.match(line)]
