"""mmkd's registries: children of mmengine's root registries, scope ``mmkd``.

With ``default_scope='mmkd'`` (or under :func:`build_component`) a config builds mmkd's own
components from here:

- :data:`MODELS`: distillation algorithms, distillers, connectors, distillation losses, and the
  DearKD backbone and head;
- :data:`TASK_UTILS`: recorders (``type='ModuleOutputs'``, ``'PreReLU'``, ...; see
  :func:`mmkd.models.recorders.build_recorder`) and the data-free image synthesizer;
- :data:`HOOKS`, :data:`OPTIM_WRAPPER_CONSTRUCTORS`, :data:`DATASETS`, :data:`TRANSFORMS`: the
  training hooks, the optimizer constructor, the digits and synthetic datasets and their
  transforms.

The models of mmpretrain, mmdet and mmseg are reached through scoped type names
(``type='mmdet.RetinaNet'``) or stock configs (``cfg_path='mmdet::...'``); see
:func:`mmkd.models.builder.build_model_from_cfg`. The registries are filled by importing the
modules that register into them: :func:`mmkd.utils.register_all_modules`.

Examples:
    >>> from mmkd.utils import register_all_modules
    >>> register_all_modules(init_default_scope=False)
    >>> loss = build_component(MODELS, dict(type='KDLoss', tau=4))
    >>> type(loss).__name__, loss.tau
    ('KDLoss', 4)
    >>> recorder = build_component(TASK_UTILS, dict(type='ModuleOutputsRecorder',
    ...                                              source='backbone.layer4'))
    >>> recorder
    ModuleOutputsRecorder(model: 'backbone.layer4')
    >>> MODELS.get('mmpretrain.ImageClassifier').__name__  # a stock model, by scoped name
    'ImageClassifier'
"""
from collections.abc import Mapping
from typing import Any

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, locations=['mmkd.engine'])
RUNNER_CONSTRUCTORS = Registry('runner constructor', parent=MMENGINE_RUNNER_CONSTRUCTORS)
STRATEGIES = Registry('strategy', parent=MMENGINE_STRATEGIES)
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, locations=['mmkd.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mmkd.engine'])
LOG_PROCESSORS = Registry(
    'log processor', parent=MMENGINE_LOG_PROCESSORS, locations=['mmkd.engine'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, locations=['mmkd.engine'])
OPTIM_WRAPPERS = Registry(
    'optim wrapper', parent=MMENGINE_OPTIM_WRAPPERS, locations=['mmkd.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=['mmkd.engine'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, locations=['mmkd.engine'])

DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['mmkd.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=['mmkd.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=['mmkd.datasets'])

MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mmkd.models'])
MODEL_WRAPPERS = Registry(
    'model wrapper', parent=MMENGINE_MODEL_WRAPPERS, locations=['mmkd.models'])
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS)
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, locations=['mmkd.models'])

METRICS = Registry('metric', parent=MMENGINE_METRICS)
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR)
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS)
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS)
INFERENCERS = Registry('inferencer', parent=MMENGINE_INFERENCERS)
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS)


def build_component(registry: Registry, cfg: Any) -> Any:
    """Build one of mmkd's own components (a loss, connector, recorder, distiller...) from
    ``registry`` in mmkd's scope, whatever the caller's default scope.

    mmengine resolves an unscoped type in the *current* default scope, which is the stock
    package's when a config keeps its ``default_scope`` (or whichever scope the last runner
    set). A config that names its scope (``_scope_``) keeps it; ``'mmpretrain.X'`` style
    types resolve as usual.

    Args:
        registry (Registry): One of the registries of this module.
        cfg (dict): The component's config, with its ``type``.

    Returns:
        The built component.

    Examples:
        >>> from mmengine.registry import DefaultScope
        >>> from mmkd.utils import register_all_modules
        >>> register_all_modules(init_default_scope=False)
        >>> with DefaultScope.overwrite_default_scope('mmdet'):  # a stock config's scope
        ...     loss = build_component(MODELS, dict(type='FitNetsLoss'))
        >>> type(loss).__module__
        'mmkd.models.losses.fitnets_loss'
    """
    if isinstance(cfg, Mapping) and '_scope_' not in cfg:
        cfg = dict(cfg, _scope_='mmkd')
    return registry.build(cfg)
