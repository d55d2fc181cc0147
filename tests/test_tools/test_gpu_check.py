"""tools/gpu_check.py, the one-command GPU check, in its CPU mode: every section runs (so the
GPU run cannot rot), a failing or slow section is recorded while the others still run, and the
train section's checks catch a teacher that runs past its last tap or takes gradients."""
import copy
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import REPO, save_checkpoint_of, tiny_classifier
from mmkd.registry import MODELS

sys.path.insert(0, osp.join(REPO, 'tools'))
import gpu_check as G  # noqa: E402


def run_gpu_check(tmp_path, *args):
    """``tools/gpu_check.py --device cpu ARGS`` as a command; (process, report text)."""
    out = tmp_path / 'report.md'
    done = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'gpu_check.py'), '--device',
                           'cpu', '--out', str(out), *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    return done, out.read_text()


def section_result(report: str, name: str) -> str:
    """The result column of ``name`` in the report's summary table."""
    row = next(line for line in report.splitlines() if line.startswith(f'| [{name}]'))
    return row.split('|')[2].strip()


def test_quick_cpu_mode_runs_every_section_and_its_checks_pass(tmp_path):
    done, report = run_gpu_check(tmp_path, '--quick')
    assert done.returncode == 0, report + done.stdout[-3000:]
    assert [section_result(report, name) for name in G.SECTIONS] == ['passed'] * len(G.SECTIONS)
    assert 'mmkd | imports from' in report
    assert report.count('| nms IoU') == 3 and report.count('| roi_align') == 2
    # mmkd's shim: bfloat16 under CPU autocast gives the float32 op's result
    assert report.count('| bfloat16 autocast: ') == 2
    assert all(line.endswith('| ok |') for line in report.splitlines()
               if line.startswith('| bfloat16 autocast: '))
    # train: each quick config in fp32 and bfloat16 autocast, all four checks ok
    rows = [line for line in report.splitlines() if line.endswith(' build) |')]
    names = {osp.relpath(config, 'configs') for config in G.QUICK.configs}
    assert sorted((row.split(' | ')[0][2:], row.split(' | ')[1]) for row in rows) == sorted(
        (name, precision) for name in names for precision in ('fp32', 'bf16'))
    assert all(row.count(' ok |') == 4 and 'FAIL' not in row for row in rows), rows
    # the detector's teacher never runs its neck and head (its taps are in the backbone)
    assert any('retinanet' in row and 'neck' in row and ': 0 ran ok' in row for row in rows)
    assert '| finished | iter_2.pth saved | ok |' in report  # ddp, gloo, one process
    assert 'ofd_resnet18_w32_w4 |' in report and ', cls | ofd |' in report  # both benchmarks
    # levers: the default step and the lever beside it, in the lever table
    assert 'ofd_resnet18_w32_w4 | bf16-teacher+channels-last |' in report.split('## levers')[1]
    assert '===== mmrazor' in (tmp_path / 'report.log').read_text()


def test_a_failing_section_is_recorded_and_the_next_one_still_runs(tmp_path):
    done, report = run_gpu_check(tmp_path, '--quick', '--sections', 'train', 'ops',
                                 '--configs', 'configs/kd/no_such_config.py', '--workers', '1')
    assert done.returncode == 1
    assert section_result(report, 'train') == '**FAILED** (see the checks)'
    assert 'no_such_config.py' in report.split('## train')[1]  # the error, with its traceback
    assert section_result(report, 'ops') == 'passed'


def test_a_section_out_of_time_is_killed_and_the_report_says_so(tmp_path):
    done, report = run_gpu_check(tmp_path, '--quick', '--sections', 'train', '--budget', '2')
    assert done.returncode == 1
    assert section_result(report, 'train').startswith('**TIMED OUT**')


def test_train_checks_catch_a_teacher_running_past_its_last_tap_or_taking_gradients(tmp_path):
    C = G.benchmark_module('_common')
    teacher_cfg = tiny_classifier(width=8)
    ckpt = save_checkpoint_of(teacher_cfg, str(tmp_path / 'teacher.pth'))
    batches = [C.make_batch('cls', 2, 32, 10, seed) for seed in range(2)]
    runs = {}
    for stop_early in (True, False):
        algorithm = MODELS.build(dict(
            type='SingleTeacherDistill', architecture=tiny_classifier(width=4),
            teacher=copy.deepcopy(teacher_cfg), teacher_ckpt=ckpt, dry_run_shape=(3, 32, 32),
            stop_teacher_early=stop_early,
            distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
                name='hint', student='backbone.layer2',
                student_connector=dict(type='ConvBNConnector'),
                loss=dict(type='FitNetsLoss'))]))).train()
        data = algorithm.data_preprocessor(copy.deepcopy(batches[0]), True)
        after = C.modules_after_last_tap(algorithm.teacher, algorithm, data['inputs'],
                                         data['data_samples'])
        assert {'backbone.layer3', 'backbone.layer4', 'neck', 'head.fc'} <= set(after)
        assert not any(name.startswith(('backbone.layer1', 'backbone.layer2')) for name in after)
        if not stop_early:  # a teacher parameter that trains
            algorithm.teacher.head.fc.weight.requires_grad_(True)
        runs[stop_early] = G.precision_run(algorithm, batches, 'fp32', torch.device('cpu'), 2,
                                           after)
    assert runs[True]['after_called'] == [] and runs[True]['teacher_grads'] == []
    assert 'head.fc' in runs[False]['after_called']
    assert runs[False]['teacher_grads'] == ['head.fc.weight']
    assert all(run['moved'] > 0 and len(run['losses']) == 2 for run in runs.values())


def test_every_section_gets_its_floor_and_the_rest_is_shared():
    full = G.section_budgets(G.FULL, G.SECTIONS)
    assert full == {name: G.FULL.budgets[name] for name in G.SECTIONS}
    assert G.section_budgets(G.FULL, G.SECTIONS, sum(full.values())) == pytest.approx(full)
    # a second run of three sections in 140 s (as on the H200): versions keeps its 30 s
    three = G.section_budgets(G.FULL, ['versions', 'overhead', 'mmrazor'], 140)
    assert three['versions'] == G.FULL.floors['versions'] == 30
    assert sum(three.values()) == pytest.approx(140)
    assert all(three[name] >= G.FULL.floors[name] for name in three)
    # less than the floors: each gets its floor, the run's end cuts the last ones
    assert G.section_budgets(G.FULL, G.SECTIONS, 60) == G.FULL.floors


def mmcv_focal_kernel(logits, target, gamma: float, alpha: float):
    """The arithmetic of mmcv 2.1's sigmoid focal loss CUDA kernels (forward and backward,
    ``sigmoid_focal_loss_cuda_kernel.cuh``), transcribed to float32 torch ops."""
    one_hot = torch.nn.functional.one_hot(target, logits.size(1) + 1)[:, :-1].float()
    p = 1 / (1 + torch.exp(-logits.float()))
    tiny = torch.finfo(torch.float32).tiny  # FLT_MIN
    log_p, log_q = torch.log(p.clamp(min=tiny)), torch.log((1 - p).clamp(min=tiny))
    loss = (-one_hot * alpha * (1 - p).pow(gamma) * log_p
            - (1 - one_hot) * (1 - alpha) * p.pow(gamma) * log_q)
    grad = (-one_hot * alpha * (1 - p).pow(gamma) * (1 - p - gamma * p * log_p)
            - (1 - one_hot) * (1 - alpha) * p.pow(gamma) * (gamma * (1 - p) * log_q - p))
    return loss, grad


def test_focal_loss_check_passes_mmcv_s_float32_arithmetic_and_catches_a_wrong_kernel():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn((512, 80), generator=generator) * 3  # as the ops section draws them
    target = torch.randint(0, 81, (512, ), generator=generator)
    loss_diff, grad_diff, ratio = G.focal_loss_agreement(
        *mmcv_focal_kernel(logits, target, 2.0, 0.25), logits, target, 2.0, 0.25)
    # the cancellation in 1 - p: 1.9e-3 here, as mmcv's CUDA kernel gave on an H200
    assert 1e-3 < loss_diff < 3e-3 and grad_diff < 1e-6 and ratio <= 1
    wrong = {'alpha swapped': mmcv_focal_kernel(logits, target, 2.0, 0.75),
             'gamma 1': mmcv_focal_kernel(logits, target, 1.0, 0.25),
             'next class': mmcv_focal_kernel(logits, (target + 1) % 81, 2.0, 0.25),
             'float32 sign flipped': tuple(-v for v in mmcv_focal_kernel(logits, target, 2.0,
                                                                         0.25))}
    for name, (loss, grad) in wrong.items():
        assert G.focal_loss_agreement(loss, grad, logits, target, 2.0, 0.25)[2] > 1e3, name


def test_the_commit_comes_from_mmkd_commit_then_the_snapshot_file_then_git(tmp_path,
                                                                          monkeypatch):
    source = G.benchmark_module('_source')
    monkeypatch.setenv('MMKD_COMMIT', 'abc1234')
    assert source.source_commit() == 'abc1234 (MMKD_COMMIT)'
    monkeypatch.delenv('MMKD_COMMIT')
    git = source.source_commit()
    head = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True).stdout.strip()
    assert git.split()[0] == head
    # a snapshot without its .git (git archive): the file written next to the code
    monkeypatch.setattr(source, 'REPO', str(tmp_path))
    assert source.source_commit() == 'unknown commit'
    (tmp_path / '.mmkd-commit').write_text('def5678\n')
    assert source.source_commit() == 'def5678 (.mmkd-commit)'


def test_cpu_bfloat16_runs_more_than_one_step(tmp_path):
    """bfloat16 autocast on the CPU for several steps (the context was entered once and the
    second step failed: '_GeneratorContextManager' object has no attribute 'args')."""
    C = G.benchmark_module('_common')
    teacher_cfg = tiny_classifier(width=8)
    ckpt = save_checkpoint_of(teacher_cfg, str(tmp_path / 'teacher.pth'))
    algorithm = MODELS.build(dict(
        type='SingleTeacherDistill', architecture=tiny_classifier(width=4),
        teacher=teacher_cfg, teacher_ckpt=ckpt, dry_run_shape=(3, 32, 32),
        distiller=dict(type='ConfigurableDistiller', tap_pairs=[dict(
            name='hint', student='backbone.layer2',
            student_connector=dict(type='ConvBNConnector'), loss=dict(type='FitNetsLoss'))])))
    batches = [C.make_batch('cls', 2, 32, 10, seed) for seed in range(2)]
    run = G.precision_run(algorithm.train(), batches, 'bf16', torch.device('cpu'), 3, None)
    assert len(run['losses']) == 3 and run['moved'] > 0
