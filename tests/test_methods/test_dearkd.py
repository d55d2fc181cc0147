"""DearKD end to end through tools/train.py's code path: the two-stage schedule (distillation
losses and the teacher's forward stop at the switch), DF-DearKD on synthesised images, and the
ImageNet config."""
import copy

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmpretrain.structures import DataSample

from mmkd.apis.train import build_train_runner
from helpers import config_path, digits_options, save_checkpoint_of

# A thin teacher keeps the tests fast: the digits ResNet-18 at width 4 (layer1: 4 x 8 x 8).
TEACHER = dict(cfg_path='mmkd::digits/student_resnet18_w4.py')
SMALL_VIT = {
    'model.architecture.backbone.arch': dict(embed_dims=16, num_layers=2, num_heads=4,
                                             feedforward_channels=32),
    'model.architecture.backbone.num_mhca_layers': 1,
    'model.architecture.head.in_channels': 16,
    'model.distiller.tap_pairs.1.student': 'backbone.layers.0',
}


class IterationLog(Hook):
    """Records, per training iteration, the logged losses, how often the teacher ran and the
    target of the student's distillation token."""

    def __init__(self) -> None:
        self.rows, self._calls, self._handle = [], 0, None

    def before_train(self, runner) -> None:
        self._handle = runner.model.teacher.register_forward_pre_hook(self._count)
        self.student_before = copy.deepcopy(runner.model.student.state_dict())
        self.teacher_before = copy.deepcopy(runner.model.teacher.state_dict())

    def _count(self, *args) -> None:
        self._calls += 1

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.rows.append(dict(epoch=runner.epoch, losses={k: float(v) for k, v in outputs.items()},
                              teacher_calls=self._calls,
                              dist_target=runner.model.student.head.dist_target))
        self._calls = 0

    def after_train(self, runner) -> None:
        self._handle.remove()


def _options(tmp_path, log: IterationLog, epochs: int, stop_at: int) -> dict:
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


def train_with_log(config: str, work_dir: str, options: dict, log: IterationLog):
    """tests/helpers.train (tools/train.py's code path) with ``log`` registered."""
    runner = build_train_runner(config_path(config), work_dir=work_dir, cfg_options=options)
    runner.register_hook(log)
    runner.train()
    return runner


def test_two_stage_schedule_end_to_end(tmp_path):
    log = IterationLog()
    runner = train_with_log('digits/dearkd_resnet18_w32_mhca_vit.py', str(tmp_path / 'run'),
                            _options(tmp_path, log, epochs=3, stop_at=2), log)
    stage1 = [row for row in log.rows if row['epoch'] < 2]
    stage2 = [row for row in log.rows if row['epoch'] == 2]
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
    assert any(not torch.equal(student[k], v) for k, v in log.student_before.items())
    for key, value in runner.model.teacher.state_dict().items():
        assert torch.equal(value, log.teacher_before[key]), key
    # The student's weights and its averaged two-token prediction are in the checkpoint.
    saved = torch.load(str(tmp_path / 'run' / 'epoch_3.pth'), weights_only=True)['state_dict']
    assert torch.equal(saved['student.backbone.layers.0.attn.position_weights'],
                       student['backbone.layers.0.attn.position_weights'])


def test_data_free_dearkd_end_to_end(tmp_path):
    log = IterationLog()
    ckpt = str(tmp_path / 'teacher.pth')
    options = _options(tmp_path, log, epochs=1, stop_at=1)
    cache = str(tmp_path / 'synthetic.pth')
    options.update({
        'train_dataloader.dataset.teacher.cfg_path': TEACHER['cfg_path'],
        'train_dataloader.dataset.teacher_ckpt': ckpt,
        'train_dataloader.dataset.num_per_class': 2,
        'train_dataloader.dataset.batch_size': 20,
        'train_dataloader.dataset.cache_file': cache,
        'train_dataloader.dataset.synthesizer.resolution_schedule': [(16, 2), (32, 3)],
    })
    options.pop('train_dataloader.dataset.shots_per_class')
    train_with_log('digits/dearkd_datafree_resnet18_w32_mhca_vit.py', str(tmp_path / 'run'),
                   options, log)
    synthetic = torch.load(cache, weights_only=True)
    assert synthetic['images'].shape == (20, 32, 32, 3)
    assert synthetic['images'].dtype == torch.uint8
    assert sorted(synthetic['labels'].tolist()) == sorted(list(range(10)) * 2)
    assert len(log.rows) == 5 and all(row['teacher_calls'] == 1 for row in log.rows)
    assert all('loss_aligner' in row['losses'] for row in log.rows)


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
