"""The digits data set through mmpretrain's pipeline and evaluator, and the demo
(tools/digits_demo.py) on a shortened schedule: its table, its runs and its teacher cache."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.evaluation import Accuracy

from helpers import REPO, run_tool
from mmkd.demo.digits import (DIGITS_ENTRIES, TEACHER_CONFIG, Comparison, RunResult,
                              config_fingerprint, digits_config, find_cached_teacher,
                              prepare_teacher, read_val_curve, resolve_entries)
from mmkd.demo.report import paired_gain, plot_curves
from mmkd.registry import DATASETS


def build_digits(**kwargs):
    pipeline = [dict(type='mmpretrain.RandomCrop', crop_size=32, padding=2),
                dict(type='mmpretrain.PackInputs')]
    return DATASETS.build(dict(type='DigitsDataset', pipeline=pipeline, **kwargs))


def indices(dataset):
    return [dataset.get_data_info(i)['digits_index'] for i in range(len(dataset))]


def labels(dataset):
    return np.array([dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))])


def test_digits_load_through_the_mmpretrain_pipeline_and_evaluator():
    dataset = build_digits(split='val')
    sample = dataset[0]
    assert sample['inputs'].shape == (3, 32, 32) and sample['inputs'].dtype == torch.uint8
    assert sample['data_samples'].gt_label.item() == dataset.get_data_info(0)['gt_label']
    assert dataset.metainfo['classes'] == tuple('0123456789')
    # 8x8 values 0..16 upscaled to 0..255 with three equal channels
    raw = dataset.get_data_info(0)['img']
    assert raw.shape == (32, 32, 3) and raw.max() > 200
    assert np.array_equal(raw[..., 0], raw[..., 2])
    evaluator = Accuracy(topk=(1, ))
    samples = [dataset[i]['data_samples'] for i in range(20)]
    for s in samples:
        s.set_pred_score(torch.nn.functional.one_hot(s.gt_label, 10).float()[0])
    evaluator.process(None, [s.to_dict() for s in samples])
    assert evaluator.evaluate(20)['accuracy/top1'] == 100.0


def test_digits_split_is_stratified_deterministic_and_few_shot_subsampling_too():
    train, val = build_digits(split='train'), build_digits(split='val')
    assert len(train) + len(val) == 1797
    assert not set(indices(train)) & set(indices(val))
    assert indices(build_digits(split='val')) == indices(val)
    assert indices(build_digits(split='val', split_seed=1)) != indices(val)
    assert np.all(np.abs(np.bincount(labels(val)) / len(val) - 0.1) < 0.02)  # stratified

    few = build_digits(split='train', shots_per_class=20, shots_seed=3)
    assert len(few) == 200 and np.all(np.bincount(labels(few)) == 20)
    assert set(indices(few)) <= set(indices(train))
    assert indices(build_digits(split='train', shots_per_class=20, shots_seed=3)) == indices(few)
    assert indices(build_digits(split='train', shots_per_class=20, shots_seed=4)) != indices(few)
    with pytest.raises(ValueError, match='fewer than shots_per_class'):
        build_digits(split='val', shots_per_class=100)
    with pytest.raises(ValueError, match='split must be one of'):
        build_digits(split='test')


def test_method_table_and_schedule_overrides():
    assert resolve_entries(['kd']) == ['baseline', 'kd']
    with pytest.raises(KeyError, match='known:'):
        resolve_entries(['kd', 'nope'])
    for entry in DIGITS_ENTRIES.values():  # every listed config exists and loads
        Config.fromfile(os.path.join(REPO, 'configs', entry.config))
    cfg = digits_config('digits/kd_resnet18_w32_w4.py', seed=2, epochs=3, val_interval=1,
                        teacher_ckpt='t.pth')
    assert (cfg.randomness.seed, cfg.train_dataloader.dataset.shots_seed) == (2, 2)
    assert (cfg.train_cfg.max_epochs, cfg.param_scheduler.T_max) == (3, 3)
    assert cfg.model.teacher_ckpt == 't.pth'
    with pytest.raises(ValueError, match='teacher_ckpt'):
        digits_config('digits/kd_resnet18_w32_w4.py')
    few = digits_config('digits/student_resnet18_w4.py', shots_per_class=10)
    full = digits_config('digits/student_resnet18_w4.py', shots_per_class=0)
    assert few.train_dataloader.dataset.shots_per_class == 10
    assert full.train_dataloader.dataset.shots_per_class is None
    with pytest.raises(ValueError, match='few-shot'):
        digits_config('digits/dearkd_datafree_resnet18_w32_mhca_vit.py', teacher_ckpt='t.pth',
                      shots_per_class=10)


def log_dir(work_dir):
    """The log dir (``<work_dir>/<timestamp>``) of the single run in ``work_dir``."""
    (scalars, ) = Path(work_dir).rglob('scalars.json')
    return str(scalars.parent.parent)


def student_state(checkpoint):
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    if any(k.startswith('student.') for k in state):
        state = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    return state


def test_demo_short_run_writes_the_table_and_distils(tmp_path, capsys):
    work, teacher_dir = tmp_path / 'demo', tmp_path / 'teacher'
    run_tool('tools/digits_demo.py',
             ['--epochs', '2', '--teacher-epochs', '1', '--methods', 'kd',
              '--work-dir', work, '--teacher-dir', teacher_dir])
    out = capsys.readouterr().out
    table = (work / 'results.md').read_text()
    assert table.strip().splitlines()[0].startswith('| model |') and table.strip() in out
    # a progress bar per model, trained teacher included, and the plot, in a few lines
    for name, epochs in (('teacher', 1), ('baseline', 2), ('kd', 2)):
        assert re.search(rf'^{name} +━+ epoch {epochs}/{epochs} loss ', out, re.MULTILINE)
    assert len(out.splitlines()) < 40 and (work / 'curves.png').is_file()
    report = json.loads((work / 'results.json').read_text())
    assert [row['name'] for row in report['rows']] == ['teacher', 'baseline', 'kd']
    runs = {run['name']: run for run in report['runs']}
    for name, run in runs.items():  # the table shows each run's last logged validation
        curve = read_val_curve(log_dir(run['work_dir']))
        assert [list(point) for point in curve] == run['curve']
        assert curve[-1][0] == 2 and run['top1'] == curve[-1][1]
        assert f'| {name} |' in table and f'{run["top1"]:.2f}' in table
    kd, baseline = student_state(runs['kd']['checkpoint']), student_state(
        runs['baseline']['checkpoint'])
    assert kd.keys() == baseline.keys()
    assert any(not torch.equal(kd[k], baseline[k]) for k in kd if kd[k].is_floating_point())
    scalars = [json.loads(line) for line in
               open(os.path.join(log_dir(runs['kd']['work_dir']), 'vis_data', 'scalars.json'))]
    assert any('loss_kd' in record for record in scalars)  # the KD loss was trained

    # the teacher is cached: reused while config and checkpoint are unchanged
    teacher = report['teacher']
    checkpoint_mtime = os.path.getmtime(teacher['checkpoint'])
    cached = prepare_teacher(str(teacher_dir), epochs=1)
    assert cached.reused and cached.top1 == teacher['top1']
    assert os.path.getmtime(teacher['checkpoint']) == checkpoint_mtime
    fingerprint = config_fingerprint(digits_config(TEACHER_CONFIG, epochs=1))
    assert find_cached_teacher(str(teacher_dir), fingerprint)[0] is not None
    other = config_fingerprint(digits_config(TEACHER_CONFIG, epochs=2))
    assert 'config' in find_cached_teacher(str(teacher_dir), other)[1]
    with open(teacher['checkpoint'], 'ab') as file:  # a changed file is not reused
        file.write(b'\0')
    assert 'changed' in find_cached_teacher(str(teacher_dir), fingerprint)[1]

    # the benchmark's plot from the same runs
    comparison = Comparison(RunResult(**teacher), [RunResult(**run) for run in report['runs']],
                            seeds=(0, ))
    png = plot_curves(comparison, str(tmp_path / 'curves.png'))
    assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_gain_over_the_baseline_is_paired_by_seed():
    # differences per common seed: +1, +1, 0 -> mean 2/3, std 1/sqrt(3), sem 1/3
    gain, sem = paired_gain({0: 93.0, 1: 95.0, 2: 92.0, 7: 50.0}, {0: 92.0, 1: 94.0, 2: 92.0})
    assert gain == pytest.approx(2 / 3) and sem == pytest.approx(1 / 3)
    assert paired_gain({0: 3.0}, {0: 1.0}) == (2.0, None)
    assert paired_gain({0: 3.0}, {1: 1.0}) == (None, None)
