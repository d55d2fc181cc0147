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
    """

    priority = 'HIGH'

    def __init__(self, stop_at: int, by_epoch: bool = True,
                 reset_optimizer_state: bool = False) -> None:
        if stop_at < 0:
            raise ConfigError(f'DistillSwitchHook: stop_at must be >= 0, got {stop_at}.')
        self.stop_at = stop_at
        self.by_epoch = by_epoch
        self.reset_optimizer_state = reset_optimizer_state

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._apply(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self._apply(runner, runner.iter)

    def _apply(self, runner, counter: int) -> None:
        model = unwrap_model(runner.model)
        distilling = counter < self.stop_at
        model.set_distillation(distilling)
        if not distilling:
            model.calculate_student_loss = True
        if counter == self.stop_at:
            unit = 'epoch' if self.by_epoch else 'iteration'
            runner.logger.info(f'DistillSwitchHook: distillation off from {unit} {counter}; the '
                               'teacher no longer runs.')
            if self.reset_optimizer_state:
                runner.optim_wrapper.optimizer.state.clear()
                runner.logger.info('DistillSwitchHook: optimizer state cleared.')
