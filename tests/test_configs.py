"""Every shipped config resolves: the type names of its run (data pipelines, datasets, metrics,
hooks) under its own default scope (configs that put mmkd on the model only must keep the stock
package's scope for the rest), and the type names of its model part (the algorithm, and the
distiller, recorders, connectors and losses of a distillation model in mmkd's registries; the
model and its backbone, neck and head of a plain model). Type names are looked up, nothing is
built; the benchmark configs (a model part only) are checked too."""
import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS, DefaultScope
from mmengine.registry import Registry

from helpers import REPO
from mmkd.models.distillers.tap_pairs import expand_tap_pairs
from mmkd.registry import MODELS as MMKD_MODELS
from mmkd.registry import TASK_UTILS as MMKD_TASK_UTILS

CONFIG_DIR = Path(REPO) / 'configs'
CONFIGS = sorted(str(p.relative_to(CONFIG_DIR))
                 for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)
#: Keys of a distillation model whose values are models (checked by the tests that build them).
MODEL_KEYS = ('architecture', 'teacher', 'data_preprocessor')
#: Submodules of a plain model whose types resolve in the model's registry.
SUBMODULE_KEYS = ('backbone', 'neck', 'head')
#: Sections of an expanded distiller config.
RECORDER_SECTIONS = ('student_recorders', 'teacher_recorders')
COMPONENT_SECTIONS = ('connectors', 'distill_losses')


def run_types(cfg) -> Iterator[Tuple[Registry, str]]:
    """(registry, type) of every pipeline step, dataset, metric and custom hook of a run."""
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        dataset = loader.get('dataset') if loader else None
        while dataset is not None:
            yield DATASETS, dataset['type']
            for step in dataset.get('pipeline', []):
                yield TRANSFORMS, step['type']
            dataset = dataset.get('dataset')  # wrappers (RepeatDataset, ...)
        evaluator = cfg.get(f'{split}_evaluator') or []
        for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
            yield METRICS, metric['type']
    for hook in cfg.get('custom_hooks', []):
        yield HOOKS, hook['type']


def missing_run_types(cfg) -> List[str]:
    missing = []
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        for registry, kind in run_types(cfg):
            if isinstance(kind, str):
                with registry.switch_scope_and_registry(None) as scoped:
                    if scoped.get(kind) is None:
                        missing.append(f'{scoped.scope}::{scoped.name} {kind}')
    return missing


def nested_types(cfg, where: str) -> Iterator[Tuple[str, str]]:
    """(where, type) of ``cfg`` and of every dict with a ``type`` inside it (e.g. the loss that
    ``TeKAPFeatureLoss`` wraps)."""
    if isinstance(cfg, dict):
        if isinstance(cfg.get('type'), str):
            yield where, cfg['type']
        for key, value in cfg.items():
            yield from nested_types(value, f'{where}.{key}')
    elif isinstance(cfg, (list, tuple)):
        for index, value in enumerate(cfg):
            yield from nested_types(value, f'{where}[{index}]')


def recorder_type(kind: str) -> str:
    """The registered name of a recorder type: ``'PreReLU'`` -> ``'PreReLURecorder'`` (the rule
    of :func:`mmkd.models.recorders.build_recorder`)."""
    return kind if kind.endswith('Recorder') else kind + 'Recorder'


def distillation_types(model: dict) -> Iterator[Tuple[Registry, str, str]]:
    """(mmkd registry, type, where) of the distiller, its recorders, connectors and losses (the
    ``tap_pairs`` expanded as the distiller expands them), and of the algorithm's own components
    (CrossKD's losses): all built in mmkd's scope."""
    distiller = dict(model.get('distiller') or {})
    if distiller:
        yield MMKD_MODELS, distiller['type'], 'model.distiller'
        parts = expand_tap_pairs(
            distiller.get('tap_pairs') or [],
            {section: dict(distiller.get(section) or {})
             for section in RECORDER_SECTIONS + COMPONENT_SECTIONS + ('loss_forward_mappings', )})
        for section in RECORDER_SECTIONS:
            for name, recorder in parts[section].items():
                yield (MMKD_TASK_UTILS, recorder_type(recorder['type']),
                       f'model.distiller.{section}.{name}')
        for section in COMPONENT_SECTIONS:
            for where, kind in nested_types(parts[section], f'model.distiller.{section}'):
                yield MMKD_MODELS, kind, where
    for key, value in model.items():
        if key not in MODEL_KEYS + ('distiller', 'type', '_scope_'):
            for where, kind in nested_types(value, f'model.{key}'):
                yield MMKD_MODELS, kind, where


def missing_model_types(cfg) -> List[str]:
    """``where: type`` of each type name of the model part that its registry does not have."""
    model = cfg.model.to_dict()
    missing = []
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        with MODELS.switch_scope_and_registry(model.get('_scope_')) as registry:
            own = [('model', model['type'])] + [
                (f'model.{key}', model[key]['type']) for key in SUBMODULE_KEYS
                if 'distiller' not in model and isinstance(model.get(key), dict)]
            missing += [f'{where}: {kind} (not in {registry.scope}::{registry.name})'
                        for where, kind in own if registry.get(kind) is None]
    if 'distiller' in model or 'architecture' in model:
        missing += [f'{where}: {kind} (not in mmkd::{registry.name})'
                    for registry, kind, where in distillation_types(model)
                    if registry.get(kind) is None]
    return missing


def included_by_others(config: str) -> bool:
    """Whether another config names ``config`` in its ``_base_`` (a fragment, checked as part of
    the configs that include it)."""
    target = (CONFIG_DIR / config).resolve()
    for other in CONFIG_DIR.rglob('*.py'):
        for node in ast.parse(other.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                    getattr(t, 'id', None) == '_base_' for t in node.targets):
                bases = ast.literal_eval(node.value)
                bases = [bases] if isinstance(bases, str) else bases
                if any((other.parent / base).resolve() == target for base in bases
                       if '::' not in base):
                    return True
    return False


@pytest.mark.parametrize('config', CONFIGS)
def test_config_types_resolve(config):
    cfg = Config.fromfile(str(CONFIG_DIR / config))
    if 'model' not in cfg and 'train_dataloader' not in cfg:
        assert included_by_others(config), (
            f'{config} has neither a model nor a run and no config includes it: move it to '
            'configs/_base_/ or give it a model.')
        return
    missing = missing_run_types(cfg)
    if 'model' in cfg:
        missing += missing_model_types(cfg)
    assert not missing, missing


def test_model_check_names_each_misspelled_type(tmp_path):
    """The model check sees the algorithm, the distiller, a recorder, a connector, a loss nested
    in another loss and an algorithm's own loss."""
    path = tmp_path / 'typos.py'
    path.write_text(
        "default_scope = 'mmkd'\n"
        "model = dict(type='SingleTeacherDistil', architecture=dict(), teacher=dict(),\n"
        "             loss_cls_kd=dict(type='KDQualityFocalLos'),\n"
        "             distiller=dict(type='ConfigurableDistiler', tap_pairs=[\n"
        "                 dict(name='hint', student='backbone.layer1', recorder='PreRelu',\n"
        "                      student_connector=dict(type='ConvBnConnector'),\n"
        "                      loss=dict(type='TeKAPFeatureLoss',\n"
        "                                loss=dict(type='FitNetLoss')))]))\n")
    assert missing_model_types(Config.fromfile(str(path))) == [
        'model: SingleTeacherDistil (not in mmkd::model)',
        'model.distiller: ConfigurableDistiler (not in mmkd::model)',
        'model.distiller.student_recorders.hint: PreReluRecorder (not in mmkd::task util)',
        'model.distiller.teacher_recorders.hint: PreReluRecorder (not in mmkd::task util)',
        'model.distiller.connectors.hint_student: ConvBnConnector (not in mmkd::model)',
        'model.distiller.distill_losses.loss_hint.loss: FitNetLoss (not in mmkd::model)',
        'model.loss_cls_kd: KDQualityFocalLos (not in mmkd::model)',
    ]
