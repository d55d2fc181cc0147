"""Helpers shared by the tests: tiny real models of mmpretrain/mmdet/mmseg, teacher checkpoints
written to a temp dir, and training through tools/train.py's code path."""
import copy
import os
import os.path as osp
import runpy
import sys
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from data_factory import (cls_data_options, det_data_options, make_classification_dataset,
                          make_coco_detection, make_segmentation_dataset, seg_data_options)
from mmkd.apis.train import build_train_runner
from mmkd.models import build_model_from_cfg

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


class StudentSnapshot(Hook):
    """Keeps the student's state (and the distiller's: the connectors) as training starts,
    after the weights are initialised, for :func:`moved_tensors`."""

    def before_train(self, runner) -> None:
        model = runner.model
        self.student = copy.deepcopy(model.student.state_dict())
        self.distiller = copy.deepcopy(model.distiller.state_dict())


def moved_tensors(before: dict, module) -> list:
    """Names of the floating-point entries of ``module``'s state that differ from ``before``."""
    return [k for k, v in module.state_dict().items()
            if v.is_floating_point() and not torch.equal(v, before[k])]


def train_counting_calls(cfg, work_dir, options, teacher_modules, hooks=()):
    """Train like tools/train.py, counting calls of teacher submodules during training;
    ``hooks`` are registered on the runner first."""
    runner = build_train_runner(cfg, work_dir=work_dir, cfg_options=options)
    for hook in hooks:
        runner.register_hook(hook)
    calls = {name: [] for name in teacher_modules}
    handles = [runner.model.teacher.get_submodule(name).register_forward_pre_hook(
        lambda *args, name=name: calls[name].append(1)) for name in teacher_modules]
    runner.train()
    for handle in handles:
        handle.remove()
    return runner, {name: len(count) for name, count in calls.items()}


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
