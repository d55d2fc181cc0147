"""Hooks of the core in real runs: switching distillation off, evaluating the teacher."""
import pytest
import torch
from mmengine.config import Config

from helpers import config_path, digits_options, save_checkpoint_of, train
from mmkd.apis.train import build_train_runner
from mmkd.utils.errors import ConfigError


def kd_config(tmp_path, hooks):
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    ckpt = save_checkpoint_of(teacher_cfg.model.to_dict(), str(tmp_path / 'teacher.pth'))
    cfg = Config.fromfile(config_path('digits/kd_resnet18_w32_w4.py'))
    cfg.model.teacher_ckpt = ckpt
    cfg.custom_hooks = hooks
    return cfg


def test_distill_switch_hook_stops_the_teacher_and_the_distill_loss(tmp_path):
    cfg = kd_config(tmp_path, [dict(type='DistillSwitchHook', stop_at=1)])
    teacher_calls = []
    options = digits_options(epochs=2, val_interval=2)
    runner = build_train_runner(cfg, work_dir=str(tmp_path / 'work'), cfg_options=options)
    runner.model.teacher.register_forward_pre_hook(lambda *args: teacher_calls.append(1))
    runner.train()
    iters_per_epoch = len(runner.train_dataloader)
    assert len(teacher_calls) == iters_per_epoch  # the first epoch only
    assert 'train/loss_kd' in runner.message_hub.log_scalars, list(runner.message_hub.log_scalars)
    kd_history, _ = runner.message_hub.get_scalar('train/loss_kd').data
    assert len(kd_history) == iters_per_epoch
    assert not runner.model.distillation_enabled


def test_distill_switch_hook_gives_the_training_images_another_pipeline_at_the_switch(
        tmp_path):
    stage2 = [dict(type='mmpretrain.Resize', scale=16), dict(type='mmpretrain.PackInputs')]
    cfg = kd_config(tmp_path, [dict(type='DistillSwitchHook', stop_at=3, by_epoch=False,
                                    train_pipeline=stage2)])
    runner = build_train_runner(cfg, work_dir=str(tmp_path / 'work'),
                                cfg_options=digits_options(epochs=2, val_interval=2))
    sizes = []
    runner.model.student.backbone.register_forward_pre_hook(
        lambda module, args: sizes.append(args[0].shape[-1]) if module.training else None)
    runner.train()
    assert sizes[:3] == [32] * 3  # iterations 0-2: the dataset's own pipeline
    assert len(sizes) > 4 and set(sizes[3:]) == {16}  # from iteration 3: train_pipeline

    # a run that starts (or resumes) in stage 2: its first batch already has the new pipeline
    cfg = kd_config(tmp_path, [dict(type='DistillSwitchHook', stop_at=0, by_epoch=False,
                                    train_pipeline=stage2)])
    runner = build_train_runner(cfg, work_dir=str(tmp_path / 'work1'),
                                cfg_options=digits_options(epochs=1))
    sizes.clear()
    runner.model.student.backbone.register_forward_pre_hook(
        lambda module, args: sizes.append(args[0].shape[-1]) if module.training else None)
    runner.train()
    assert sizes and set(sizes) == {16}

    cfg = kd_config(tmp_path, [dict(type='DistillSwitchHook', stop_at=3, by_epoch=False,
                                    train_pipeline=stage2)])
    runner = build_train_runner(cfg, work_dir=str(tmp_path / 'work2'), cfg_options=dict(
        digits_options(epochs=1), **{'train_dataloader.num_workers': 1}))
    with pytest.raises(ConfigError, match='num_workers=1'):
        runner.train()


def test_teacher_eval_hook_reports_the_teacher_accuracy(tmp_path):
    cfg = kd_config(tmp_path, [dict(type='TeacherEvalHook')])
    runner = train(cfg, str(tmp_path / 'work'), digits_options(epochs=1))
    metrics = runner.message_hub.get_info('teacher_metrics')
    assert 0 <= metrics['accuracy/top1'] <= 100
    # the teacher's own prediction, computed directly, gives the same accuracy
    correct = total = 0
    model = runner.model.eval()
    with torch.no_grad():
        for data in runner.val_dataloader:
            data = model.data_preprocessor(data, False)
            for sample in model.teacher(**data, mode='predict'):
                correct += int(sample.pred_label.item() == sample.gt_label.item())
                total += 1
    assert abs(metrics['accuracy/top1'] - 100 * correct / total) < 1e-4
