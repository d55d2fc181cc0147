"""Build a runner that evaluates a checkpoint, the way ``tools/test.py`` does.

The checkpoint is loaded **strictly**: mmengine's Runner loads ``load_from`` with
``strict=False``, which turns a wrong checkpoint into a random model and a warning among
hundreds of log lines. :class:`StrictTestCheckpointHook` checks the checkpoint against the model
before the Runner copies it in; the accepted pairs are

- a distillation config with its distillation checkpoint (the teacher is built without its
  own checkpoint: its weights and the teacher connectors' state come from the tested file);
- a stock (student) config with a student checkpoint (``tools/export_student.py``, or a plain
  model's own checkpoint);
- a stock (student) config with a distillation checkpoint (mmkd's ``student.`` keys or
  MMRazor's ``architecture.`` keys): the student part is loaded, and one log line says so.

Anything else raises :class:`~mmkd.utils.errors.CheckpointMismatchError`. How the keys of these
checkpoints look, how the student is taken out and how a state dict is compared with the model:
:mod:`mmkd.models.algorithms.checkpoint_layout`.
"""
from typing import Optional, Tuple, Union

import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmkd.models.algorithms import SingleTeacherDistill
from mmkd.models.algorithms.checkpoint_layout import (StateDict, check_state_dict,
                                                      describe_checkpoint, holds_student_alone,
                                                      state_for_model)
from mmkd.registry import MODELS
from mmkd.utils.checkpoint import set_checkpoint_role
from mmkd.utils.dist import setup_cpu_distributed, unwrap_model
from mmkd.utils.errors import ConfigError
from .train import load_run_config


def _mismatch_fix(state: StateDict, expected: StateDict, config: str) -> str:
    """What the checkpoint is, and which config tests it."""
    found = describe_checkpoint(state, expected)
    if holds_student_alone(state, expected):
        return (f"{found}Fix: test it with the student's own config (the config that "
                f"{config}'s `architecture` names), not with the distillation config.")
    return (f'{found}tools/test.py loads checkpoints strictly. Fix: test it with the config it '
            "was trained with (a distillation checkpoint: its distillation config or the "
            "student's config).")


def state_dict_for_test(model: nn.Module, state: StateDict, filename: str,
                        config: str = 'the config') -> Tuple[StateDict, bool]:
    """The state dict of ``state`` that loads strictly into ``model``.

    Args:
        model: The model under test (not wrapped).
        state: The checkpoint's state dict.
        filename: The checkpoint's path, for messages.
        config: The config's name, for messages.

    Returns:
        tuple: The state dict with ``model``'s keys and shapes (``num_batches_tracked`` of BN
        layers may be missing, as torch's strict loading allows), and whether it is the
        student part of a distillation checkpoint (``model`` is a plain model and ``state`` has
        ``student.`` or ``architecture.`` keys).

    Raises:
        CheckpointMismatchError: Keys are missing, unexpected or of another shape; names the
            file, how many of each and the first ones.
    """
    expected = model.state_dict()
    state, from_distillation = state_for_model(state, expected)
    part = 'the student part of distillation checkpoint' if from_distillation else 'checkpoint'
    check_state_dict(
        state, expected, f'{part} {filename} does not match the model of {config} '
        f'({type(model).__name__})', _mismatch_fix(state, expected, config))
    return state, from_distillation


class StrictTestCheckpointHook(Hook):
    """Makes the Runner's load of the checkpoint under test strict, and loads the student of
    a distillation checkpoint into a plain (student) model.

    ``Runner.load_checkpoint`` calls ``after_load_checkpoint`` after reading the file and before
    copying the state dict into the model, with ``strict=False``. This hook runs first
    (priority ``HIGHEST``, so hooks such as ``EMAHook`` see the result): it replaces the state
    dict with :func:`state_dict_for_test`'s, which has exactly the model's keys and shapes, or
    raises. The non-strict copy that follows therefore copies every tensor and nothing else.

    Args:
        filename: The checkpoint under test.
        config: The config's name, for messages.
    """

    priority = 'HIGHEST'

    def __init__(self, filename: str, config: str) -> None:
        self.filename = filename
        self.config = config
        self.checked = False

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        has_state_dict = isinstance(checkpoint.get('state_dict'), dict)
        state = checkpoint['state_dict'] if has_state_dict else dict(checkpoint)
        state, from_distillation = state_dict_for_test(model, state, self.filename, self.config)
        if has_state_dict:
            checkpoint['state_dict'] = state
        else:
            checkpoint.clear()
            checkpoint.update(state)
        if from_distillation:
            runner.logger.info(
                f'{self.filename} is a distillation checkpoint: loaded its student '
                f'({len(state)} tensors) strictly into {type(model).__name__}; its teacher and '
                'distiller weights are not used.')
        self.checked = True

    def before_test(self, runner: Runner) -> None:
        if not self.checked:
            raise RuntimeError(f'{self.filename} was not checked before testing: the runner '
                               f'({type(runner).__name__}) did not load it through '
                               'Runner.load_checkpoint.')


def is_distillation_config(model_cfg: dict) -> bool:
    """Whether ``model_cfg`` builds an mmkd distillation algorithm (a
    :class:`SingleTeacherDistill` or a subclass)."""
    model_type = model_cfg.get('type')
    if isinstance(model_type, str):
        scope, _, name = model_type.rpartition('.')
        if scope not in ('', 'mmkd'):
            return False
        model_type = MODELS.get(name)
    return isinstance(model_type, type) and issubclass(model_type, SingleTeacherDistill)


def build_test_runner(config: Union[str, Config], checkpoint: str,
                      work_dir: Optional[str] = None, out: Optional[str] = None,
                      cfg_options: Optional[dict] = None, launcher: str = 'none') -> Runner:
    """The runner ``tools/test.py`` tests with.

    Works on a distillation config with its checkpoint (the algorithm's ``predict`` mode runs
    the student; the teacher's checkpoint is not needed, the tested file holds the teacher), and
    on a stock student config with a student checkpoint or a distillation checkpoint (its
    student part). The checkpoint is loaded strictly (:class:`StrictTestCheckpointHook`).

    Args:
        config: Config path or object.
        checkpoint: Checkpoint to evaluate.
        work_dir: Where logs go; default ``./work_dirs/<config name>``.
        out: Dump the raw predictions to this ``.pkl`` file.
        cfg_options: Overrides merged into the config.
        launcher: Job launcher.
    """
    cfg = load_run_config(config, work_dir, cfg_options, launcher)
    cfg.load_from, cfg.resume = checkpoint, False
    set_checkpoint_role(checkpoint, 'test checkpoint')  # named in the messages of its load
    if is_distillation_config(cfg.model):
        cfg.model.load_teacher = False
    if out is not None:
        if not out.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--out must be a .pkl file, got {out}.')
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) \
            else [cfg.test_evaluator]
        cfg.test_evaluator = list(evaluators) + [dict(type='DumpResults', out_file_path=out)]
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    name = config if isinstance(config, str) else (cfg.filename or 'the config')
    runner.register_hook(StrictTestCheckpointHook(checkpoint, name))
    return runner
