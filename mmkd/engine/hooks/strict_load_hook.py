"""Refuse, before training, a checkpoint that does not fit the run that resumes or loads it.

The model's keys and shapes are compared, and the mismatch reported, by
:func:`mmkd.models.algorithms.checkpoint_layout.check_state_dict`, as for ``tools/test.py``.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper

from mmkd.models.algorithms.checkpoint_layout import (check_state_dict, describe_checkpoint,
                                                      state_dict_of, strip_wrapper_prefix)
from mmkd.registry import HOOKS
from mmkd.utils.dist import unwrap_model
from mmkd.utils.errors import CheckpointMismatchError

#: Scheduler settings that mmengine fills from the run (``end``: ``max_epochs``) and then
#: overwrites with the checkpoint's on resume.
_SCHEDULER_BOUNDS = ('begin', 'end', 'T_max')


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Fail before training when the checkpoint a run resumes from, or loads with
    ``load_from``, does not fit it.

    mmengine's ``Runner`` loads both non-strictly: a student-only export "resumes" a
    distillation run at its epoch with random weights, and a checkpoint of another method
    loads half of the model before the optimizer fails. mmengine calls
    ``after_load_checkpoint`` before it touches the model; there this hook compares the
    checkpoint with the model (every key, every shape) and, on resume, with the optimizer's
    parameter groups and the schedulers' ``begin``/``end``/``T_max``, and raises
    :class:`~mmkd.utils.errors.CheckpointMismatchError` naming the file, the first
    mismatching keys and the fix. Only the load that starts the run is checked.

    ``tools/train.py`` (:func:`mmkd.apis.train.build_train_runner`) adds it whenever the run
    resumes or has a ``load_from``.

    Args:
        filename: The file the runner loads, for messages.
        resume: The runner resumes (model, optimizer, schedulers, counters); ``False``: it
            loads the model's weights only (``load_from``).
    """

    priority = 'VERY_HIGH'

    def __init__(self, filename: Optional[str] = None, resume: bool = True) -> None:
        self.filename = filename
        self.resume = resume
        self._started = False

    @property
    def _what(self) -> str:
        name = f' {self.filename}' if self.filename else ''
        return f'cannot resume from{name}' if self.resume else f'cannot load_from{name}'

    def _refused(self, problem: str, fix: str) -> CheckpointMismatchError:
        """The error that refuses this checkpoint: what does not fit, and what to do."""
        return CheckpointMismatchError(f'{self._what}: {problem} Fix: {fix}')

    def before_train(self, runner) -> None:
        self._started = True

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._started:
            return
        self._check_model(runner, checkpoint)
        if self.resume:
            self._check_meta(checkpoint)
            self._check_optimizer(runner, checkpoint)
            self._check_schedulers(runner, checkpoint)

    def _check_model(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        state = strip_wrapper_prefix(state_dict_of(checkpoint))
        expected = model.state_dict()
        if self.resume:
            fix = ('Resume from a checkpoint that a run of this same config wrote (its work '
                   "dir's epoch_N.pth / iter_N.pth, or --resume without a path for the "
                   "latest). To start a new run from these weights, give them to the part of "
                   "the model they belong to: init_cfg=dict(type='Pretrained', "
                   "checkpoint=...) on the student (the architecture dict).")
        else:
            fix = ('load_from loads the whole model strictly in mmkd (mmengine would skip the '
                   "mismatching weights silently). To initialise a part of the model, use "
                   "init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...) on that part "
                   '(e.g. the student: the architecture dict), which loads what fits.')
        check_state_dict(
            state, expected, f'{self._what}: its weights do not match the model of this config '
            f'({type(model).__name__})', f'{describe_checkpoint(state, expected)}Fix: {fix}')

    def _check_meta(self, checkpoint: dict) -> None:
        meta = checkpoint.get('meta')
        if not isinstance(meta, dict) or 'epoch' not in meta or 'iter' not in meta:
            raise self._refused(
                'it has no meta epoch/iter, so no training run wrote it (a state dict or an '
                "exported model).", "resume from a run's own checkpoint, or start a new run "
                'from these weights with load_from.')

    def _check_optimizer(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('optimizer')
        optim_wrapper = runner.optim_wrapper
        if not isinstance(saved, dict) or 'param_groups' not in saved or not isinstance(
                optim_wrapper, OptimWrapper):
            return
        saved_sizes = [len(group['params']) for group in saved['param_groups']]
        sizes = [len(group['params']) for group in optim_wrapper.optimizer.param_groups]
        if saved_sizes != sizes:
            raise self._refused(
                f'its optimizer has parameter groups of sizes {saved_sizes}, the optimizer of '
                f'this config {sizes}. It was written with another optim_wrapper '
                '(paramwise_cfg, constructor) or model.', 'resume with the config that wrote '
                'it, or start a new run from its weights with load_from.')

    def _check_schedulers(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('param_schedulers')
        schedulers = runner.param_schedulers
        if not isinstance(saved, list) or not isinstance(schedulers, list):
            return
        if len(saved) != len(schedulers):
            raise self._refused(
                f'it holds {len(saved)} parameter schedulers, this config {len(schedulers)}.',
                'resume with the param_scheduler that wrote it.')
        for index, (saved_state, scheduler) in enumerate(zip(saved, schedulers)):
            self._check_scheduler(index, saved_state, scheduler)

    def _check_scheduler(self, index: int, saved: dict, scheduler) -> None:
        current = scheduler.state_dict()
        changed = [f'{key}={saved[key]} in the checkpoint, {current[key]} in this config'
                   for key in _SCHEDULER_BOUNDS
                   if key in saved and key in current and saved[key] != current[key]]
        if changed:
            raise self._refused(
                f'param_scheduler[{index}] ({type(scheduler).__name__}) has '
                f'{"; ".join(changed)}. On resume mmengine keeps the checkpoint\'s values, so '
                'the schedule would silently follow the old run (e.g. a flat learning rate '
                'after its end). A scheduler without an explicit `end` ends at max_epochs, '
                'so changing train_cfg.max_epochs moves it.', 'set begin/end (and T_max) in '
                'param_scheduler explicitly to the values the run was started with (the '
                'shipped configs set end=max_epochs), or start a new run from these weights '
                'with load_from.')

