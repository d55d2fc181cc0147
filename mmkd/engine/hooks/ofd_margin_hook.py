"""Measure OFD's empirical margins on training batches before training."""
from itertools import islice

from mmengine.hooks import Hook

from mmkd.registry import HOOKS
from mmkd.utils.dist import unwrap_model
from mmkd.utils.errors import ConfigError, ConfigTypeError


@HOOKS.register_module()
class OFDMarginHook(Hook):
    """Before training, measure the margins of ``OFDTeacherConnector(margin_source=
    'empirical')`` on ``num_batches`` batches of the training dataloader, with
    :meth:`OverhaulFeatureDistillation.measure_empirical_margins
    <mmkd.models.algorithms.OverhaulFeatureDistillation.measure_empirical_margins>` (in a
    distributed run every rank gets the same margins).

    A resumed run keeps the margins from its checkpoint (they are buffers) and measures
    nothing.

    Args:
        num_batches: Training batches to measure on (K). Defaults to 20.
    """

    priority = 'HIGH'

    def __init__(self, num_batches: int = 20) -> None:
        if num_batches < 1:
            raise ConfigError(f'OFDMarginHook: num_batches must be >= 1, got {num_batches}.')
        self.num_batches = num_batches

    def before_train(self, runner) -> None:
        """Measure the margins not restored from a checkpoint."""
        model = unwrap_model(runner.model)
        if not hasattr(model, 'distiller'):
            raise ConfigTypeError(f'OFDMarginHook needs a distillation algorithm, got '
                                  f'{type(model).__name__}; remove the hook from custom_hooks.')
        if not hasattr(model, 'measure_empirical_margins'):
            raise ConfigTypeError(
                f"OFDMarginHook measures the margins of OFD's algorithm, got "
                f"{type(model).__name__}; set model.type='OverhaulFeatureDistillation' (add "
                "teacher_norm_mode='eval' to keep the teacher's BN in evaluation mode) or "
                'remove the hook from custom_hooks.')
        connectors = model.empirical_margin_connectors()
        if not connectors:
            raise ConfigError("OFDMarginHook: no OFDTeacherConnector has margin_source="
                              "'empirical'; remove the hook or set margin_source='empirical'.")
        pending = [name for name, connector in connectors.items()
                   if not bool(connector.margin_ready)]
        if not pending:
            runner.logger.info('OFDMarginHook: margins restored from the checkpoint.')
            return
        used = model.measure_empirical_margins(
            islice(runner.train_dataloader, self.num_batches), pending)
        runner.logger.info(f'OFDMarginHook: measured {len(pending)} margin(s) on {used} '
                           'training batches.')
