"""OFD's algorithm: the paper's teacher setting, and the margins measured from data."""
from typing import Dict, Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine import dist

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, NameNotFoundError
from ..connectors.ofd_connector import OFDTeacherConnector
from .single_teacher_distill import SingleTeacherDistill


@MODELS.register_module()
class OverhaulFeatureDistillation(SingleTeacherDistill):
    """OFD (Heo et al., ICCV 2019): :class:`SingleTeacherDistill` with the paper's teacher
    setting as the default, ``teacher_norm_mode='train'``, and the measurement of empirical
    margins (:meth:`measure_empirical_margins`, called by ``OFDMarginHook``).

    The official scripts keep the whole teacher in train mode while distilling: its BN layers
    normalise with the statistics of the current batch (its weights and running statistics
    still never change). ``teacher_norm_mode='eval'`` uses the running statistics instead
    (MMRazor's behaviour, and the right choice for a teacher trained with frozen BN, e.g.
    mmdet's ``norm_eval=True`` detectors).

    The method itself lives in the distiller config: pre-ReLU taps (``recorder='PreReLU'``),
    ``ConvBNConnector`` on the student, ``OFDTeacherConnector`` (margin ReLU) on the teacher
    and ``OFDLoss`` with stage weights ``1 / 2**(N - i - 1)``; see ``configs/ofd``.

    Args:
        teacher_norm_mode: ``'train'`` (default, the paper) or ``'eval'``.
        **kwargs: See :class:`SingleTeacherDistill`.
    """

    def __init__(self,
                 architecture: Union[dict, nn.Module],
                 teacher: Union[dict, nn.Module],
                 distiller: dict,
                 teacher_norm_mode: str = 'train',
                 **kwargs) -> None:
        super().__init__(architecture, teacher, distiller, teacher_norm_mode=teacher_norm_mode,
                         **kwargs)

    # -- empirical margins -------------------------------------------------------------------
    def empirical_margin_connectors(self) -> Dict[str, OFDTeacherConnector]:
        """The teacher connectors whose margin is measured from data
        (``OFDTeacherConnector(margin_source='empirical')``), by name, in mapping order."""
        return {name: connector for name, connector in self.distiller.teacher_connectors().items()
                if isinstance(connector, OFDTeacherConnector)
                and connector.margin_source == 'empirical'}

    @torch.no_grad()
    def measure_empirical_margins(self, data_batches: Iterable[dict],
                                  names: Optional[Sequence[str]] = None) -> int:
        """Run the teacher over ``data_batches`` and set the margins of the empirical
        connectors to the mean negative response per channel of their input.

        The teacher runs as it does while distilling (the algorithm in train mode, so with
        ``teacher_norm_mode='train'`` its BN layers use batch statistics; with
        ``stop_teacher_early`` it stops once its taps have recorded). Each connector's input,
        e.g. (B, C, H, W), is the distiller's
        (:meth:`ConfigurableDistiller.teacher_connector_inputs`). In a distributed run the
        sums are all-reduced, so every rank gets the same margins.

        Args:
            data_batches: Batches as the dataloader yields them (before the data
                preprocessor).
            names: The connectors to measure (default: every one of
                :meth:`empirical_margin_connectors`).

        Returns:
            int: Number of batches used.

        Raises:
            NameNotFoundError: ``names`` holds another name.
            ConfigError: ``data_batches`` is empty.
        """
        connectors = self.empirical_margin_connectors()
        if names is not None:
            unknown = [name for name in names if name not in connectors]
            if unknown:
                raise NameNotFoundError(
                    f'measure_empirical_margins: {unknown} are not connectors with '
                    f"margin_source='empirical'; those are {list(connectors)}.")
            connectors = {name: connectors[name] for name in names}
        for connector in connectors.values():
            connector.start_measuring()
        was_training = self.training
        self.train()
        num_batches = 0
        try:
            for batch in data_batches:
                data = self.data_preprocessor(batch, True)
                self._run_teacher(data['inputs'], data.get('data_samples'))
                inputs = self.distiller.teacher_connector_inputs(list(connectors))
                for name, connector in connectors.items():
                    connector.accumulate(inputs[name])
                num_batches += 1
        finally:
            self.train(was_training)
        if num_batches == 0:
            raise ConfigError('measure_empirical_margins: no batch to measure the margins on: '
                              'the data given (the train dataloader for OFDMarginHook) is empty.')
        for connector in connectors.values():
            for value in connector.measuring_state().values():
                dist.all_reduce(value, op='sum')
            connector.finish_measuring()
        return num_batches
