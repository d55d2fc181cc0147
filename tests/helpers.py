"""Helpers shared by the tests: tiny real models of mmpretrain/mmdet/mmseg, teacher checkpoints
written to a temp dir, and training through tools/train.py's code path."""
import copy
import os
import os.path as osp
import runpy
import sys
from typing import Callable, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from data_factory import (cls_data_options, det_data_options, make_classification_dataset,
                          make_coco_detection, make_segmentation_dataset, seg_data_options)
from mmkd.apis.train import build_train_runner
from mmkd.models import build_model_from_cfg
from mmkd.utils.dist import unwrap_model

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def config_path(relative: str) -> str:
    return osp.join(REPO, 'configs', relative)


def tiny_classifier(width: int = 8, depth: int = 18, num_classes: int = 10,
                    backbone: Optional[dict] = None) -> dict:
    """An mmpretrain ImageClassifier config with a thin ResNet (stage widths w..8w)."""
    expansion = 4 if depth >= 50 else 1
    backbone_cfg = dict(type='ResNet', depth=depth, base_channels=width, stem_channels=width,
                        out_indices=(3, ))
    backbone_cfg.update(backbone or {})
    return dict(
        type='mmpretrain.ImageClassifier',
        backbone=backbone_cfg,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=8 * width * expansion, loss=dict(type='CrossEntropyLoss')),
        data_preprocessor=dict(num_classes=num_classes, mean=[0.0] * 3, std=[1.0] * 3))


def save_checkpoint_of(model_cfg: dict, path: str, seed: int = 0) -> str:
    """Build ``model_cfg`` with seeded random weights and save its state dict to ``path``."""
    torch.manual_seed(seed)
    model = build_model_from_cfg(copy.deepcopy(model_cfg), 'teacher')
    if hasattr(model, 'init_weights'):
        model.init_weights()
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def train(config, work_dir: str, cfg_options: Optional[dict] = None, resume=None):
    """Train through the code path of tools/train.py; returns the runner after training."""
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    runner = build_train_runner(cfg, work_dir=work_dir, cfg_options=cfg_options, resume=resume)
    runner.train()
    return runner


def digits_options(epochs: int = 1, val_interval: int = 1) -> dict:
    """cfg_options that shorten a digits config to a few seconds."""
    return {
        'train_cfg.max_epochs': epochs,
        'train_cfg.val_interval': val_interval,
        'param_scheduler.T_max': epochs,
        'default_hooks.checkpoint.interval': epochs,
        'default_hooks.logger.interval': 1,
    }


def run_tool(path: str, argv) -> None:
    """Run ``tools/<...>.py`` (``path`` relative to the repository) as ``python path argv``, in
    this process, in debug mode (``MMKD_DEBUG=1``): a user mistake arrives as its exception, not
    as exit status 2 (tests/test_utils/test_cli_errors.py checks that)."""
    old_argv, old_debug = sys.argv, os.environ.get('MMKD_DEBUG')
    sys.argv = [path, *map(str, argv)]
    os.environ['MMKD_DEBUG'] = '1'
    try:
        runpy.run_path(osp.join(REPO, path), run_name='__main__')
    finally:
        sys.argv = old_argv
        if old_debug is None:
            os.environ.pop('MMKD_DEBUG')
        else:
            os.environ['MMKD_DEBUG'] = old_debug


class TrainRecord:
    """What :func:`train_recorded` saw: the runner after training, the model's state as training
    started, how often teacher modules ran and one row per training iteration.

    Attributes:
        runner (Runner): The runner after ``runner.train()``.
        before (dict): ``'student'``, ``'teacher'`` and ``'distiller'`` -> a copy of that part's
            state dict taken at ``before_train`` (after the weights are initialised).
        calls (dict): Each name in ``count`` -> how many times that teacher submodule ran its
            ``forward`` during ``runner.train()``.
        rows (list[dict]): One dict per training iteration, in order: ``epoch`` and ``iter``
            (the runner's, before the iteration), ``losses`` (the iteration's outputs, name ->
            float, ``'loss'`` the total), ``teacher_calls`` (the teacher's ``forward`` calls in
            this iteration), ``lr`` (the first parameter group's), ``watched`` (each name in
            ``watch`` -> a copy of that student tensor after the iteration) and whatever
            ``observe(runner)`` returned.
    """

    def __init__(self, runner, before: dict, calls: dict, rows: list) -> None:
        self.runner, self.before, self.calls, self.rows = runner, before, calls, rows

    @property
    def model(self):
        """The distillation algorithm (out of its DDP wrapper, if any)."""
        return unwrap_model(self.runner.model)

    def moved(self, part: str = 'student', floating_only: bool = True) -> list:
        """Names of the entries of ``part``'s state dict (``'student'``, ``'teacher'`` or
        ``'distiller'``: the connectors) that differ from the copy taken as training started;
        integer buffers (BN's ``num_batches_tracked``) count only with ``floating_only=False``."""
        before = self.before[part]
        return [name for name, value in getattr(self.model, part).state_dict().items()
                if (value.is_floating_point() or not floating_only)
                and not torch.equal(value, before[name])]

    def history(self, name: str):
        """The logged values of ``train/<name>`` (e.g. ``'loss_kd'``), one per iteration, as a
        numpy array."""
        return self.runner.message_hub.get_scalar(f'train/{name}').data[0]


class _Recorder(Hook):
    """Counts teacher calls and fills :class:`TrainRecord`'s ``before`` and ``rows``."""

    def __init__(self, watch, observe) -> None:
        self.watch, self.observe = tuple(watch), observe
        self.before, self.rows, self.teacher_calls = {}, [], 0

    def count_teacher_call(self, *args) -> None:
        self.teacher_calls += 1

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        self.before = {part: copy.deepcopy(getattr(model, part).state_dict())
                       for part in ('student', 'teacher', 'distiller')}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.teacher_calls = 0
        self.row = dict(epoch=runner.epoch, iter=runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        student = unwrap_model(runner.model).student.state_dict()
        self.row.update(losses={k: float(v) for k, v in (outputs or {}).items()},
                        teacher_calls=self.teacher_calls,
                        lr=runner.optim_wrapper.get_lr()['lr'][0],
                        watched={name: student[name].detach().clone() for name in self.watch})
        if self.observe is not None:
            self.row.update(self.observe(runner))
        self.rows.append(self.row)


def train_recorded(config, work_dir: str, cfg_options: Optional[dict] = None, *,
                   count: Sequence[str] = (), watch: Sequence[str] = (),
                   observe: Optional[Callable] = None, hooks: Sequence[Hook] = ()) -> TrainRecord:
    """Train ``config`` for the iterations or epochs its ``cfg_options`` set, through the code
    path of tools/train.py, and report call counts and which tensors moved.

    The one helper the end-to-end method tests share (tests/test_methods/): it replaces
    hand-made snapshot hooks, teacher call counters and per-iteration logs.

    Args:
        config (str | Config): A config file or a loaded config.
        work_dir (str): The runner's work directory (a tmp dir).
        cfg_options (dict, optional): Overrides, as ``--cfg-options`` takes them.
        count (Sequence[str]): Teacher submodules (``'backbone.layer4'``; ``''`` is the whole
            teacher) whose ``forward`` calls during ``runner.train()`` are counted in
            :attr:`TrainRecord.calls`. Module hooks do not see a direct call of a submodule's
            method (mmseg's ``decode_head.forward``): count a layer inside it.
        watch (Sequence[str]): Student state-dict names copied after each iteration into the
            row's ``watched``.
        observe (Callable[[Runner], dict], optional): Called after each iteration; its dict is
            added to the row (e.g. ``lambda runner: dict(dist_target=...)``).
        hooks (Sequence[Hook]): More hooks, registered on the runner first.

    Returns:
        TrainRecord: the runner, the state as training started, the counts and the rows.

    Example:
        A two-stage run (tests/test_methods/test_fsp.py), as a hand-made per-iteration log hook
        would check it::

            record = train_recorded(config_path('digits/fsp_two_stage_resnet18_w32_w4.py'),
                                    str(tmp_path / 'work'), options,
                                    watch=['head.fc.weight'],
                                    observe=lambda runner: dict(stage=runner.epoch + 1))
            for row in record.rows:
                row['losses']         # {'loss': ..., 'loss_fsp_layer1': ..., ...}
                row['teacher_calls']  # 1 while distilling, 0 after the switch
                row['watched']['head.fc.weight']
                row['stage']          # from ``observe``
            assert record.moved('teacher', floating_only=False) == []
            assert len(record.moved('student')) > 10
            record.history('loss_fsp_layer1')  # one value per iteration

        Counting calls of teacher submodules (tests/test_methods/test_baselines.py)::

            record = train_recorded(cfg, work_dir, options, count=['backbone.layer2', 'head'])
            assert record.calls == {'backbone.layer2': 1, 'head': 0}
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    runner = build_train_runner(cfg, work_dir=work_dir, cfg_options=cfg_options)
    for hook in hooks:
        runner.register_hook(hook)
    recorder = _Recorder(watch, observe)
    runner.register_hook(recorder)
    teacher = unwrap_model(runner.model).teacher
    calls = {name: 0 for name in count}

    def count_call(name):
        def hook(*args):
            calls[name] += 1
        return hook

    handles = [teacher.get_submodule(name).register_forward_pre_hook(count_call(name))
               for name in count]
    handles.append(teacher.register_forward_pre_hook(recorder.count_teacher_call))
    try:
        runner.train()
    finally:
        for handle in handles:
            handle.remove()
    return TrainRecord(runner, recorder.before, calls, recorder.rows)


def assert_teacher_unchanged(teacher, ckpt: str) -> None:
    """The teacher's state equals its checkpoint's, bit for bit."""
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    current = teacher.state_dict()
    assert set(saved) == set(current)
    assert all(torch.equal(saved[k], current[k]) for k in saved)


#: Tiny real data per task for one-iteration runs of stock configs:
#: kind -> (dataset factory, cfg_options for it, image size).
TINY_DATA = {
    'cls': (make_classification_dataset, cls_data_options, 32),
    'det': (make_coco_detection, det_data_options, 64),
    'seg': (make_segmentation_dataset, seg_data_options, 64),
}


def tiny_run_options(cfg, tmp_path, kind):
    """One iteration on tiny data, random teacher weights in a checkpoint, no downloads, the
    dry run at the data's size."""
    make_dataset, data_options, size = TINY_DATA[kind]
    info = make_dataset(tmp_path / 'data', image_size=(size, size))
    ckpt = save_checkpoint_of(dict(cfg.model.teacher, pretrained=False),
                              str(tmp_path / 'teacher.pth'))
    options = dict(data_options(info, max_iters=1, save_checkpoint=False),
                   **{'model.teacher.pretrained': False, 'model.teacher_ckpt': ckpt,
                      'model.dry_run_shape': (3, size, size)})
    if 'init_cfg' in cfg.model.architecture.get('backbone', {}):
        options['model.architecture.backbone.init_cfg'] = None
    return options, ckpt


# A thin teacher keeps the digits runs fast: the digits ResNet-18 at width 4 (layer1: 4 x 8 x 8).
THIN_DIGITS_TEACHER = dict(cfg_path='mmkd::digits/student_resnet18_w4.py')
# cfg_options that shrink the digits DearKD configs' MHCA ViT student to 2 blocks of width 16,
# the aligner on its one MHCA block.
SMALL_MHCA_VIT = {
    'model.architecture.backbone.arch': dict(embed_dims=16, num_layers=2, num_heads=4,
                                             feedforward_channels=32),
    'model.architecture.backbone.num_mhca_layers': 1,
    'model.architecture.head.in_channels': 16,
    'model.distiller.tap_pairs.1.student': 'backbone.layers.0',  # the MHCA block
}
# The same for the DF-DearKD config, whose aligner is its third tap pair (after the two tokens').
SMALL_MHCA_VIT_DATAFREE = {
    **{key: value for key, value in SMALL_MHCA_VIT.items() if 'tap_pairs' not in key},
    'model.distiller.tap_pairs.2.student': 'backbone.layers.0',
}
