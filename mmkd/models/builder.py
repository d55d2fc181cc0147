"""Build the student and the teacher from the forms a distillation config accepts.

- ``dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', pretrained=False,
  **overrides)``: the ``model`` of a stock config that ships inside mmpretrain/mmdet/mmseg
  (``'mmkd::...'``: one of mmkd's configs; a path without ``::``: a config file), built in the
  config's ``default_scope`` (else the package's); ``overrides`` are merged into it (e.g.
  ``backbone=dict(with_cp=True)``). ``pretrained=False`` strips pretrained initialisation,
  ``True`` loads the config's model-zoo weights, a path loads that checkpoint
  (:func:`load_pretrained`).
- ``dict(type='mmpretrain.ImageClassifier', ...)``: a model config with a scoped type name; its
  nested types resolve in that scope. An unscoped type resolves in ``_scope_``, else in the
  current default scope (``mmkd`` when there is none).
- an ``nn.Module``: used as it is.

Reading the stock config is :mod:`mmkd.utils.config`'s job
(:func:`~mmkd.utils.config.load_stock_model_cfg`); this module builds.
"""
import importlib
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmkd.utils.config import CONFIG_PACKAGES, config_to_dict, load_stock_model_cfg
from mmkd.utils.errors import ConfigKeyError, ConfigTypeError, ModuleImportError, NameNotFoundError
from mmkd.utils.misc import did_you_mean


def register_scope_modules(scope: str) -> None:
    """Import the modules of an OpenMMLab package so that its registry is filled."""
    try:
        utils = importlib.import_module(f'{scope}.utils')
    except ImportError as error:
        raise ModuleImportError(
            f'cannot import {scope!r} for models of scope {scope!r}: {error}. Use the scope '
            f'of an installed package.{did_you_mean(scope, CONFIG_PACKAGES)}') from error
    if hasattr(utils, 'register_all_modules'):
        utils.register_all_modules(init_default_scope=False)


def build_model_from_cfg(cfg: Union[dict, nn.Module], role: str = 'model',
                         trusted: bool = False) -> nn.Module:
    """Build a student or teacher model (see the module docstring for the accepted forms).

    Args:
        cfg: The model's config or the model.
        role: ``'student'`` or ``'teacher'``, for messages. A teacher's ``pretrained=<path>``
            loads like its ``teacher_ckpt`` (:func:`load_pretrained`).
        trusted: Allow full unpickling of the ``pretrained`` checkpoint (the algorithm's
            ``trust_teacher_ckpt`` for a teacher).
    """
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = config_to_dict(cfg)
    if not isinstance(cfg, dict):
        raise ConfigTypeError(f'{role}: expected a model config dict or an nn.Module, got '
                              f'{cfg!r}.')
    checkpoint, scope = None, None
    if 'cfg_path' in cfg:
        cfg_path = cfg.pop('cfg_path')
        pretrained = cfg.pop('pretrained', False)
        cfg, scope, checkpoint = load_stock_model_cfg(cfg_path, pretrained, cfg)
    if 'type' not in cfg:
        raise ConfigKeyError(f'{role}: the model config needs `type` or `cfg_path`, e.g. '
                             "dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py').")
    scope = cfg.pop('_scope_', scope)
    if isinstance(cfg['type'], str) and '.' in cfg['type']:
        scope, cfg['type'] = cfg['type'].split('.', 1)
    model = _build_in_scope(cfg, scope, role)
    if checkpoint is not None:
        load_pretrained(model, checkpoint, role, trusted)
    return model


def load_pretrained(model: nn.Module, checkpoint: str, role: str, trusted: bool = False) -> None:
    """Load the checkpoint that ``pretrained=`` names into ``model``, strictly.

    A teacher's local file loads through
    :func:`~mmkd.models.algorithms.teacher.load_teacher_checkpoint`, as ``teacher_ckpt`` does:
    ``weights_only`` unless ``trusted``, and trusted directories never apply (a downloaded
    teacher copied into a work dir stays untrusted). A URL (``pretrained=True``: the config's
    model zoo weights) and a student's file load through mmengine under mmkd's checkpoint policy
    (:mod:`mmkd.utils.checkpoint`).
    """
    if role == 'teacher' and '://' not in checkpoint:
        from mmkd.models.algorithms.teacher import load_teacher_checkpoint
        load_teacher_checkpoint(model, checkpoint, trusted)
        return
    from mmengine.runner import load_checkpoint

    from mmkd.utils.checkpoint import set_checkpoint_role
    if '://' not in checkpoint:
        set_checkpoint_role(checkpoint, f'{role} checkpoint (pretrained=)')
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)


def _build_in_scope(cfg: dict, scope: Optional[str], role: str) -> nn.Module:
    if scope is None:
        current = DefaultScope.get_current_instance()
        scope = current.scope_name if current is not None else 'mmkd'
    register_scope_modules(scope)
    with ROOT_MODELS.switch_scope_and_registry(scope) as registry:
        if isinstance(cfg['type'], str) and registry.get(cfg['type']) is None:
            raise NameNotFoundError(
                f'{role}: model type {cfg["type"]!r} is not registered in scope {scope!r}.'
                f'{did_you_mean(cfg["type"], registry.module_dict)} '
                "Use a scoped name such as type='mmpretrain.ImageClassifier' or "
                "type='mmdet.RetinaNet', or cfg_path='mmdet::retinanet/...py'.")
        return registry.build(ConfigDict(cfg))
