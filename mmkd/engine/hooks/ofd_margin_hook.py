"""Measure OFD's empirical margins on training batches before training."""
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, List, Optional, Tuple

import torch
from mmengine import dist
from mmengine.hooks import Hook

from mmkd.models.connectors.ofd_connector import OFDTeacherConnector
from mmkd.registry import HOOKS
from mmkd.utils.dist import unwrap_model
from mmkd.utils.errors import ConfigError, ConfigTypeError


@dataclass
class EmpiricalTap:
    """A teacher tap whose margin is measured from data: its connector, and where the
    connector's input comes from (recorder, call, connectors applied before it)."""
    connector: torch.nn.Module
    recorder: str
    data_idx: Optional[int]
    preceding: Tuple[str, ...]

    def feature(self, distiller) -> torch.Tensor:
        value = distiller.teacher_recorders.get_record_data(self.recorder, self.data_idx)
        for name in self.preceding:
            value = distiller.connectors[name](value)
        return value


def empirical_taps(distiller) -> List[EmpiricalTap]:
    """The teacher taps of ``distiller`` with an ``OFDTeacherConnector(margin_source=
    'empirical')``, each connector once."""
    taps, seen = [], set()
    for specs in distiller.loss_forward_mappings.values():
        for spec in specs.values():
            if spec.from_student:
                continue
            for position, name in enumerate(spec.connector):
                connector = distiller.connectors[name]
                if (isinstance(connector, OFDTeacherConnector)
                        and connector.margin_source == 'empirical' and name not in seen):
                    seen.add(name)
                    taps.append(EmpiricalTap(connector, spec.recorder, spec.data_idx,
                                             tuple(spec.connector[:position])))
    return taps


@torch.no_grad()
def measure_empirical_margins(model, data_batches: Iterable[dict],
                              taps: Optional[List[EmpiricalTap]] = None) -> int:
    """Run the teacher of ``model`` over ``data_batches`` and set the margins of ``taps``
    (default: all empirical taps) to the mean negative response per channel.

    The teacher runs as it does while distilling (the algorithm in train mode, so with
    ``teacher_norm_mode='train'`` its BN layers use batch statistics) and stops once its taps
    have recorded. In a distributed run the sums are all-reduced, so every rank gets the same
    margins.

    Args:
        model: A distillation algorithm (``SingleTeacherDistill`` or a subclass).
        data_batches: Batches as the dataloader yields them (before the data preprocessor).
        taps: The taps to measure.

    Returns:
        int: Number of batches used.
    """
    distiller = model.distiller
    taps = empirical_taps(distiller) if taps is None else taps
    for tap in taps:
        tap.connector.start_measuring()
    was_training = model.training
    model.train()
    num_batches = 0
    try:
        for batch in data_batches:
            data = model.data_preprocessor(batch, True)
            with distiller.teacher_recorders.recording(stop_when_complete=True):
                model.teacher(data['inputs'], data.get('data_samples'), mode='tensor')
            for tap in taps:
                tap.connector.accumulate(tap.feature(distiller))
            num_batches += 1
    finally:
        model.train(was_training)
    if num_batches == 0:
        raise ConfigError('measure_empirical_margins: no batch to measure the margins on: the '
                          'data given (the train dataloader for OFDMarginHook) is empty.')
    for tap in taps:
        for value in tap.connector.measuring_state().values():
            dist.all_reduce(value, op='sum')
        tap.connector.finish_measuring()
    return num_batches


@HOOKS.register_module()
class OFDMarginHook(Hook):
    """Before training, measure the margins of ``OFDTeacherConnector(margin_source=
    'empirical')`` on ``num_batches`` batches of the training dataloader (see
    :func:`measure_empirical_margins`).

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
        model = unwrap_model(runner.model)
        if not hasattr(model, 'distiller'):
            raise ConfigTypeError(f'OFDMarginHook needs a distillation algorithm, got '
                                  f'{type(model).__name__}; remove the hook from custom_hooks.')
        taps = empirical_taps(model.distiller)
        if not taps:
            raise ConfigError("OFDMarginHook: no OFDTeacherConnector has margin_source="
                              "'empirical'; remove the hook or set margin_source='empirical'.")
        pending = [tap for tap in taps if not bool(tap.connector.margin_ready)]
        if not pending:
            runner.logger.info('OFDMarginHook: margins restored from the checkpoint.')
            return
        used = measure_empirical_margins(
            model, islice(runner.train_dataloader, self.num_batches), pending)
        runner.logger.info(f'OFDMarginHook: measured {len(pending)} margin(s) on {used} '
                           'training batches.')
