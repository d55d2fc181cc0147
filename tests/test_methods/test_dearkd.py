"""DearKD end to end through tools/train.py's code path: the two-stage schedule (distillation
losses and the teacher's forward stop at the switch), DF-DearKD on synthesised images, and the
ImageNet config."""
import os.path as osp

import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample

from mmkd.apis.train import build_train_runner
from helpers import (SMALL_MHCA_VIT, SMALL_MHCA_VIT_DATAFREE, THIN_DIGITS_TEACHER, config_path, digits_options,
                     save_checkpoint_of, train_recorded)

TEACHER, SMALL_VIT = THIN_DIGITS_TEACHER, SMALL_MHCA_VIT


def _dist_target(runner) -> dict:
    """The target of the student's distillation token after an iteration."""
    return dict(dist_target=runner.model.student.head.dist_target)


def _options(tmp_path, epochs: int, stop_at: int) -> dict:
    ckpt = save_checkpoint_of(TEACHER, str(tmp_path / 'teacher.pth'))
    options = digits_options(epochs=epochs, val_interval=epochs)
    options.pop('param_scheduler.T_max')
    options.update(SMALL_VIT)
    options.update({
        'model.teacher.cfg_path': TEACHER['cfg_path'],
        'model.teacher_ckpt': ckpt,
        'train_dataloader.batch_size': 4,
        'train_dataloader.dataset.shots_per_class': 2,
        'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=True)],
        'custom_hooks': [dict(type='DistillSwitchHook', stop_at=stop_at)],
    })
    return options


def test_two_stage_schedule_end_to_end(tmp_path):
    record = train_recorded(config_path('digits/dearkd_resnet18_w32_mhca_vit.py'),
                            str(tmp_path / 'run'), _options(tmp_path, epochs=3, stop_at=2),
                            observe=_dist_target)
    runner = record.runner
    stage1 = [row for row in record.rows if row['epoch'] < 2]
    stage2 = [row for row in record.rows if row['epoch'] == 2]
    assert len(stage1) == 10 and len(stage2) == 5  # 20 images, batches of 4
    for row in stage1:
        assert {'loss_dist_token', 'loss_aligner', 'student.loss_cls'} <= set(row['losses'])
        assert 'student.loss_dist' not in row['losses']
        assert row['teacher_calls'] == 1 and row['dist_target'] == 'teacher'
    for row in stage2:
        assert not {'loss_dist_token', 'loss_aligner'} & set(row['losses'])
        assert 'student.loss_dist' in row['losses']  # the distillation token on the labels
        assert row['teacher_calls'] == 0 and row['dist_target'] == 'label'
    # The feature loss goes down, the student moves, the teacher does not.
    aligner = [row['losses']['loss_aligner'] for row in stage1]
    assert aligner[-1] < aligner[0]
    student = runner.model.student.state_dict()
    assert record.moved('student') and record.moved('teacher', floating_only=False) == []
    # The student's weights and its averaged two-token prediction are in the checkpoint.
    saved = torch.load(str(tmp_path / 'run' / 'epoch_3.pth'), weights_only=True)['state_dict']
    assert torch.equal(saved['student.backbone.layers.0.attn.position_weights'],
                       student['backbone.layers.0.attn.position_weights'])


def _data_free_options(tmp_path, max_iters: int, stop_at: int) -> dict:
    """The data-free configs shrunk: 20 synthetic images from the thin teacher (5 steps),
    ``max_iters`` iterations of 4 images, distillation off from iteration ``stop_at``."""
    ckpt = save_checkpoint_of(TEACHER, str(tmp_path / 'teacher.pth'))
    dataset = 'train_dataloader.dataset'
    return {
        'model.teacher.cfg_path': TEACHER['cfg_path'],
        'model.teacher_ckpt': ckpt,
        f'{dataset}.teacher.cfg_path': TEACHER['cfg_path'],
        f'{dataset}.teacher_ckpt': ckpt,
        f'{dataset}.num_per_class': 2,
        f'{dataset}.batch_size': 20,
        f'{dataset}.cache_file': str(tmp_path / 'synthetic.pth'),
        f'{dataset}.synthesizer.resolution_schedule': [(16, 2), (32, 3)],
        'train_dataloader.batch_size': 4,
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': max_iters,
        'default_hooks.checkpoint.interval': max_iters,
        'default_hooks.logger.interval': 1,
        'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=False)],
        'custom_hooks': [dict(type='DistillSwitchHook', stop_at=stop_at, by_epoch=False)],
    }


def test_data_free_dearkd_end_to_end(tmp_path):
    """DF-DearKD: synthetic images labelled with the teacher's soft predictions, soft targets
    on both tokens, the aligner, the switch to label-only training."""
    options = _data_free_options(tmp_path, max_iters=5, stop_at=3)
    options.update(SMALL_MHCA_VIT_DATAFREE)
    # the config's switch, earlier: its label-only stage trains on the images unwarped
    shipped = Config.fromfile(config_path('digits/dearkd_datafree_resnet18_w32_mhca_vit.py'))
    switch, = shipped.custom_hooks
    assert switch.train_pipeline == [dict(type='mmpretrain.PackInputs')]
    options['custom_hooks'] = [dict(switch, stop_at=3)]
    record = train_recorded(config_path('digits/dearkd_datafree_resnet18_w32_mhca_vit.py'),
                            str(tmp_path / 'run'), options, observe=_dist_target)
    runner = record.runner
    synthetic = torch.load(str(tmp_path / 'synthetic.pth'), weights_only=True)
    assert synthetic['images'].shape == (20, 32, 32, 3)
    assert synthetic['images'].dtype == torch.uint8
    assert sorted(synthetic['labels'].tolist()) == sorted(list(range(10)) * 2)
    assert synthetic['fingerprint']['num_images'] == dict(num_classes=10, num_per_class=2)
    assert len(record.rows) == 5
    assert synthetic['teacher_logits'].shape == (20, 10)
    for row in record.rows[:3]:
        assert {'loss_dist_token', 'loss_cls_token', 'loss_aligner'} <= set(row['losses'])
        assert row['teacher_calls'] == 1 and row['dist_target'] == 'teacher'
    for row in record.rows[3:]:  # label-only training
        assert 'student.loss_dist' in row['losses'] and 'loss_dist_token' not in row['losses']
        assert row['teacher_calls'] == 0 and row['dist_target'] == 'label'
    assert runner.model.distiller.distill_losses['loss_dist_token'].mode == 'soft'
    # the labels are the teacher's soft predictions, learnt with a soft cross-entropy
    dataset = runner.train_dataloader.dataset
    expected = (synthetic['teacher_logits'][0] / 4.0).softmax(dim=0)
    assert torch.allclose(dataset.get_data_info(0)['gt_score'], expected)
    assert runner.model.student.head.loss_module.use_soft
    assert [type(t).__name__ for t in dataset.pipeline.transforms] == ['PackInputs']


def test_set_distillation_switches_the_distillation_token_target(tmp_path):
    runner = build_train_runner(
        config_path('digits/dearkd_resnet18_w32_mhca_vit.py'), work_dir=str(tmp_path),
        cfg_options=dict(SMALL_VIT, **{'model.teacher.cfg_path': TEACHER['cfg_path'],
                                       'model.teacher_ckpt': save_checkpoint_of(
                                           TEACHER, str(tmp_path / 'teacher.pth'))}))
    model = runner.model
    assert model.distillation_enabled and model.student.head.dist_target == 'teacher'
    model.set_distillation(False)
    assert not model.distillation_enabled and model.student.head.dist_target == 'label'
    model.set_distillation(True)
    assert model.distillation_enabled and model.student.head.dist_target == 'teacher'


def test_data_free_control_shares_the_synthetic_set_and_trains(tmp_path):
    """The DF-KD control (ResNet-18 w4) reads the same synthetic set as DF-DearKD (one cache,
    one fingerprint; DF-DearKD also reads the teacher's soft labels) and trains with KD plus
    0.5 x cross-entropy on the synthesis labels."""
    dearkd = Config.fromfile(config_path('digits/dearkd_datafree_resnet18_w32_mhca_vit.py'))
    control = Config.fromfile(config_path('digits/kd_datafree_resnet18_w32_w4.py'))
    dearkd_set = dict(dearkd.train_dataloader.dataset)
    assert dearkd_set.pop('soft_label_tau') == 4.0
    assert 'soft_label_tau' not in control.train_dataloader.dataset
    assert {k: v for k, v in dearkd_set.items() if k != '_delete_'} == {
        k: v for k, v in control.train_dataloader.dataset.items() if k != '_delete_'}
    options = _data_free_options(tmp_path, max_iters=2, stop_at=2)
    options.pop('custom_hooks')
    runner = build_train_runner(control, work_dir=str(tmp_path / 'run'), cfg_options=options)
    runner.train()
    assert runner.model.student.head.loss_module.loss_weight == 0.5
    assert osp.isfile(str(tmp_path / 'synthetic.pth'))


def test_imagenet_config_builds_and_trains_a_step(tmp_path):
    """The ImageNet config (RegNet teacher -> DearKD-Ti) through the runner, shrunk: a small
    RegNet teacher, a 3-block student at 64 px; one training step with Mixup/CutMix."""
    teacher = dict(cfg_path='mmpretrain::regnet/regnetx-400mf_8xb128_in1k.py')
    ckpt = save_checkpoint_of(teacher, str(tmp_path / 'teacher.pth'))
    cfg = Config.fromfile(config_path('dearkd/dearkd_regnetx-12gf_dearkd-ti_in1k.py'))
    runner = build_train_runner(cfg, work_dir=str(tmp_path), cfg_options={
        'model.teacher.cfg_path': teacher['cfg_path'], 'model.teacher.pretrained': False,
        'model.teacher_ckpt': ckpt, 'model.dry_run_shape': (3, 64, 64),
        'model.architecture.backbone': dict(
            arch=dict(embed_dims=48, num_layers=3, num_heads=4, feedforward_channels=96,
                      num_mhca_layers=2), img_size=64),
        'model.architecture.head.in_channels': 48,
        'model.distiller.tap_pairs.1.student': 'backbone.layers.1'})
    model = runner.model
    assert type(model).__name__ == 'DearKD' and model.student.head.dist_target == 'teacher'
    # The aligner meets the teacher's stride-16 stage (4 x 4 at 64 px, 160 channels).
    aligner = model.distiller.connectors['aligner_student']
    assert aligner.projection.out_channels == 160 and aligner.resize.size == (4, 4)
    optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    optimised = {id(p) for group in optim_wrapper.param_groups for p in group['params']}
    assert not any(id(p) in optimised for p in model.teacher.parameters())
    batch = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
                         for _ in range(4)],
                 data_samples=[DataSample().set_gt_label(i) for i in (0, 5, 9, 5)])
    model.train()
    losses = model.train_step(batch, optim_wrapper)
    assert {'student.loss_cls', 'loss_dist_token', 'loss_aligner'} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
