from typing import List, Optional

from mmengine.dataset import ClassBalancedDataset, Compose, ConcatDataset, RepeatDataset
from mmengine.hooks import Hook

from mmkd.registry import HOOKS
from mmkd.utils.dist import unwrap_model
from mmkd.utils.errors import ConfigError


@HOOKS.register_module()
class DistillSwitchHook(Hook):
    """Switch distillation off from epoch (or iteration) ``stop_at`` on.

    Before ``stop_at`` the algorithm trains as configured (e.g. DearKD's early distillation, or
    FSP's stage 1 with ``calculate_student_loss=False``); from ``stop_at`` on the teacher no
    longer runs, no distillation loss is computed and the student's task loss is on. The state
    is derived from the runner's counter each time, so resuming lands in the right stage.

    Args:
        stop_at: First epoch (0-based, i.e. after ``stop_at`` epochs) or iteration without
            distillation.
        by_epoch: Count epochs (default) or iterations.
        reset_optimizer_state: Clear the optimizer's state (momentum, Adam moments) at the
            switch, so stage 2 starts like a fresh training from stage 1's weights (FSP).
        train_pipeline: The training images' pipeline from ``stop_at`` on (transform
            configs); ``None`` keeps the dataset's. For augmentations that keep the label only
            while a teacher labels each view: on DF-DearKD's synthetic digits the teacher
            gives the synthesis label to 57 % of the warped views, so the label-only stage
            trains on the images unwarped. Needs ``num_workers=0`` in the train dataloader
            (worker processes hold their own copy of the dataset).
    """

    priority = 'HIGH'

    def __init__(self, stop_at: int, by_epoch: bool = True,
                 reset_optimizer_state: bool = False,
                 train_pipeline: Optional[List[dict]] = None) -> None:
        if stop_at < 0:
            raise ConfigError(f'DistillSwitchHook: stop_at must be >= 0, got {stop_at}.')
        self.stop_at = stop_at
        self.by_epoch = by_epoch
        self.reset_optimizer_state = reset_optimizer_state
        self.train_pipeline = train_pipeline
        self._pipeline_switched = False

    def before_train(self, runner) -> None:
        if self.train_pipeline is None:
            return
        datasets_of(runner.train_dataloader.dataset)  # a dataset without a pipeline: now
        if runner.train_dataloader.num_workers > 0:
            raise ConfigError(
                'DistillSwitchHook: train_pipeline replaces the pipeline of the dataset in this '
                'process, but the train dataloader has num_workers='
                f'{runner.train_dataloader.num_workers}: its worker processes hold their own '
                'copy of the dataset. Fix: train_dataloader.num_workers=0, or remove '
                'train_pipeline.')
        # The first batch of an iteration-based run is loaded before its hooks run: a run that
        # starts (or resumes) in stage 2 switches here.
        if not self.by_epoch and runner.iter >= self.stop_at:
            self._switch_pipeline(runner)

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._apply(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self._apply(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # An iteration's batch is loaded before its hooks run: switch the pipeline before
        # the batch of iteration ``stop_at`` is loaded.
        if not self.by_epoch and runner.iter + 1 >= self.stop_at:
            self._switch_pipeline(runner)

    def _apply(self, runner, counter: int) -> None:
        model = unwrap_model(runner.model)
        distilling = counter < self.stop_at
        model.set_distillation(distilling)
        if not distilling:
            model.calculate_student_loss = True
            self._switch_pipeline(runner)
        if counter == self.stop_at:
            unit = 'epoch' if self.by_epoch else 'iteration'
            runner.logger.info(f'DistillSwitchHook: distillation off from {unit} {counter}; the '
                               'teacher no longer runs.')
            if self.reset_optimizer_state:
                runner.optim_wrapper.optimizer.state.clear()
                runner.logger.info('DistillSwitchHook: optimizer state cleared.')

    def _switch_pipeline(self, runner) -> None:
        if self.train_pipeline is None or self._pipeline_switched:
            return
        pipeline = Compose(self.train_pipeline)
        for dataset in datasets_of(runner.train_dataloader.dataset):
            dataset.pipeline = pipeline
        self._pipeline_switched = True
        runner.logger.info('DistillSwitchHook: the training images go through train_pipeline '
                           'from now on.')


def datasets_of(dataset) -> list:
    """The datasets that hold a pipeline inside mmengine's dataset wrappers."""
    if isinstance(dataset, ConcatDataset):
        return [inner for part in dataset.datasets for inner in datasets_of(part)]
    if isinstance(dataset, (RepeatDataset, ClassBalancedDataset)):
        return datasets_of(dataset.dataset)
    if not hasattr(dataset, 'pipeline'):
        raise ConfigError(f'DistillSwitchHook: train_pipeline needs a dataset with a pipeline; '
                          f'{type(dataset).__name__} has none. Fix: remove train_pipeline.')
    return [dataset]
