"""tools/train.py and tools/test.py as commands."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from helpers import REPO, config_path, digits_options
from mmkd.apis.train import build_train_runner, load_run_config


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU message')
def test_amp_without_a_gpu_says_so():
    cfg = Config.fromfile(config_path('digits/student_resnet18_w4.py'))
    with pytest.raises(RuntimeError, match='--amp .* needs a CUDA'):
        build_train_runner(cfg, work_dir='/tmp/unused', amp=True)


def test_auto_scale_lr_needs_a_base_batch_size():
    cfg = Config.fromfile(config_path('digits/student_resnet18_w4.py'))
    with pytest.raises(KeyError, match='base_batch_size'):
        build_train_runner(cfg, work_dir='/tmp/unused', auto_scale_lr=True)


def test_train_and_test_commands_on_digits(tmp_path):
    work_dir = str(tmp_path / 'student')
    options = [f'{k}={v}' for k, v in digits_options(epochs=1).items()]
    train = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         config_path('digits/student_resnet18_w4.py'), '--work-dir', work_dir,
         '--cfg-options', *options], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, (train.stdout + train.stderr)[-3000:]
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    test = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'test.py'),
         config_path('digits/student_resnet18_w4.py'), checkpoint, '--work-dir',
         str(tmp_path / 'test'), '--out', str(tmp_path / 'predictions.pkl')],
        capture_output=True, text=True, timeout=600)
    output = test.stdout + test.stderr
    assert test.returncode == 0, output[-3000:]
    assert 'accuracy/top1' in output
    assert osp.isfile(tmp_path / 'predictions.pkl')


def test_configs_shipped_in_packages_load_like_files():
    stock = load_run_config('mmpretrain::resnet/resnet18_8xb32_in1k.py')
    assert stock.model.backbone.depth == 18
    assert stock.work_dir == osp.join('./work_dirs', 'resnet18_8xb32_in1k')
    ours = load_run_config('mmkd::digits/kd_resnet18_w32_w4.py', work_dir='w')
    assert ours.model.type == 'SingleTeacherDistill' and ours.work_dir == 'w'
