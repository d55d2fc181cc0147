"""OFD's teacher transform: the margin ReLU ``max(t, m_c)`` with a fixed per-channel margin."""
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch.nn.modules.batchnorm import _BatchNorm

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ConfigRuntimeError, ConfigTypeError
from mmkd.utils.misc import get_submodule
from ..recorders.pre_relu_recorder import ACTIVATION_TYPES
from .base_connector import BaseConnector, TeacherTapContext

MARGIN_SOURCES = ('bn', 'empirical')
#: Below this probability of a negative response the Gaussian margin is replaced by ``-3 s``.
MIN_NEGATIVE_PROBABILITY = 1e-3


def gaussian_margin(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                    num_channels: int) -> torch.Tensor:
    """``E[x | x < 0]`` per channel for ``x ~ N(beta, gamma^2)``: the official OFD margin.

    With ``s = |gamma|`` and ``m = beta``: ``m - s * phi(m / s) / Phi(-m / s)`` when
    ``Phi(-m / s) > 0.001``, else ``-3 s`` (phi, Phi: standard normal pdf and cdf).
    Computed in float64; ``s = 0`` gives ``m`` if ``m < 0`` and 0 otherwise.

    Args:
        weight: BN scale ``gamma``, shape (C,); ``None`` (no affine) means 1.
        bias: BN shift ``beta``, shape (C,); ``None`` means 0.
        num_channels: C.

    Returns:
        Tensor: Margins, shape (C,), float64.
    """
    s = (weight.detach().double().abs() if weight is not None
         else torch.ones(num_channels, dtype=torch.float64))
    m = bias.detach().double() if bias is not None else torch.zeros_like(s)
    z = m / s
    negative_probability = torch.special.ndtr(-z)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    conditional_mean = m - s * density / negative_probability
    return torch.where(negative_probability > MIN_NEGATIVE_PROBABILITY, conditional_mean, -3 * s)


_FIXES = ("Fix: give the BN explicitly, bn='<teacher module name>' (see tools/list_taps.py), or "
          "measure the margin from data with margin_source='empirical' and "
          "custom_hooks=[dict(type='OFDMarginHook')].")


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm)


def _is_activation(module: nn.Module) -> bool:
    return type(module).__name__ in ACTIVATION_TYPES


def _keep_outputs(teacher: nn.Module, selected: Callable[[nn.Module], bool], num_channels: int,
                  outputs: List[Tuple[str, torch.Tensor]]) -> list:
    """Forward hooks that keep (name, output) of every module that ``selected`` accepts whose
    output has ``num_channels`` channels. The outputs are kept alive, so no later tensor can
    reuse their memory and match by mistake."""

    def hook(name):
        def keep(module, args, output):
            if isinstance(output, torch.Tensor) and output.dim() > 1 \
                    and output.shape[1] == num_channels:
                outputs.append((name, output))
        return keep

    return [module.register_forward_hook(hook(name)) for name, module in teacher.named_modules()
            if selected(module)]


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape


def find_bn_of_tap(context: TeacherTapContext, num_channels: int) -> str:
    """Name of the teacher BN whose output tensor is the one the tap records.

    Runs the teacher once (``context.run_teacher()``) with temporary hooks on its BN and
    activation layers (``ACTIVATION_TYPES``: ReLU, ReLU6) and matches the recorded tensor's
    memory to a BN output: the residual ``out += identity`` of mmcv-style blocks is in place on
    the last BN's output (``bn2``/``bn3``), and a BN directly before a ReLU is the ReLU's input.
    A tensor that an inplace ReLU
    rectified in the BN's memory (a post-ReLU tap) is refused.

    Args:
        context: The teacher, the tap's recorder and the dry-run runner.
        num_channels: Channels of the tapped feature.

    Raises:
        ValueError: The tap is rectified, or no BN (or more than one) produces it.
    """
    bn_outputs: List[Tuple[str, torch.Tensor]] = []
    relu_outputs: List[Tuple[str, torch.Tensor]] = []
    handles = (_keep_outputs(context.teacher, _is_batch_norm, num_channels, bn_outputs)
               + _keep_outputs(context.teacher, _is_activation, num_channels, relu_outputs))
    try:
        context.run_teacher()
    finally:
        for handle in handles:
            handle.remove()
    recorder = context.recorder
    names = set()
    for index in range(recorder.num_records):
        value = recorder.get_record_data(index)
        if not isinstance(value, torch.Tensor):
            raise ConfigTypeError(f'OFDTeacherConnector: {recorder!r} records a '
                                  f'{type(value).__name__}, not a tensor. {_FIXES}')
        rectified = [name for name, output in relu_outputs if _same_tensor(output, value)]
        if rectified:
            raise ConfigError(
                f'OFDTeacherConnector: the tensor recorded by {recorder!r} is the output of '
                f'{rectified[0]!r} (after the ReLU); OFD taps the feature before the ReLU: use '
                f"recorder='PreReLU'. {_FIXES}")
        names.update(name for name, output in bn_outputs if _same_tensor(output, value))
    if len(names) == 1:
        return names.pop()
    problem = ('no teacher BN produces' if not names
               else f'several teacher BNs ({sorted(names)}) produce')
    raise ConfigError(
        f'OFDTeacherConnector: {problem} the tensor recorded by {recorder!r}, so the margin '
        'cannot be taken from a BN (supported taps: the pre-ReLU output of a residual block whose '
        'last BN takes the in-place residual add, or a BN directly before a ReLU; a copy or the '
        f'result of an out-of-place op does not match). {_FIXES}')


@MODELS.register_module()
class OFDTeacherConnector(BaseConnector):
    """OFD's margin ReLU on the teacher's pre-ReLU feature: ``max(t, m_c)``.

    ``m_c = E[t | t < 0]`` per channel is a fixed buffer (saved in checkpoints), set once after
    the teacher's weights are loaded and never updated:

    - ``margin_source='bn'`` (default, the official code): from the affine parameters of the
      teacher BN that produces the tapped feature, under a Gaussian assumption (see
      :func:`gaussian_margin`). The BN is found automatically (:func:`find_bn_of_tap`) or
      given with ``bn``. For a residual block this is the block's last BN, which ignores the
      identity branch added before the ReLU: the official approximation.
    - ``margin_source='empirical'``: measured from data, the mean of the negative responses
      per channel over ``num_batches`` training batches, by :class:`OFDMarginHook` before
      training (it must be in ``custom_hooks``; it calls
      ``OverhaulFeatureDistillation.measure_empirical_margins``). It sees the real
      distribution (identity branch included, no Gaussian assumption) and works where no BN
      precedes the tap. A channel without negative responses gets margin 0 (the teacher is
      then never clipped there).

    Args:
        in_channels: Channels C of the tapped feature; filled from the dry run when left out.
        margin_source: ``'bn'`` or ``'empirical'``.
        bn: Name of the teacher BN module to take the margin from (``margin_source='bn'``);
            found automatically when ``None``.
    """

    shape_args = ('in_channels', )

    def __init__(self,
                 in_channels: Optional[int] = None,
                 margin_source: str = 'bn',
                 bn: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if in_channels is None:
            raise ConfigError('OFDTeacherConnector needs in_channels; inside a distiller it is '
                             'filled from the dry run when left out.')
        if margin_source not in MARGIN_SOURCES:
            raise ConfigError(f'OFDTeacherConnector: margin_source must be one of '
                              f'{MARGIN_SOURCES}, got {margin_source!r}.')
        if bn is not None and margin_source != 'bn':
            raise ConfigError("OFDTeacherConnector: bn is only used with margin_source='bn'; "
                              'remove bn or set that margin_source.')
        self.in_channels = in_channels
        self.margin_source = margin_source
        self.bn = bn
        #: Name of the teacher BN the margin was taken from (set by :meth:`init_from_teacher`).
        self.margin_bn: Optional[str] = None
        self.register_buffer('margin', torch.zeros(1, in_channels, 1, 1))
        #: Whether ``margin`` holds a margin (saved with it, so a resumed run keeps it).
        self.register_buffer('margin_ready', torch.tensor(False))
        self._ready = False  # mirrors margin_ready without a device sync in forward
        self._negative_sum: Optional[torch.Tensor] = None
        self._negative_count: Optional[torch.Tensor] = None

    # -- margin from the teacher's BN ------------------------------------------------------
    def init_from_teacher(self, context: TeacherTapContext) -> None:
        """Set the margin from the teacher's BN (``margin_source='bn'``); called by the
        algorithm's dry run after the teacher's weights are loaded (see
        :mod:`~mmkd.models.connectors.base_connector`)."""
        if self.margin_source != 'bn':
            return
        name = self.bn if self.bn is not None else find_bn_of_tap(context, self.in_channels)
        bn = get_submodule(context.teacher, name, 'teacher')
        if not isinstance(bn, _BatchNorm) or bn.num_features != self.in_channels:
            raise ConfigError(f'OFDTeacherConnector: teacher module {name!r} must be a BN '
                              f'layer with {self.in_channels} channels, got {bn!r}; set bn to '
                              'the BN before the tapped ReLU.')
        self.set_margin(gaussian_margin(bn.weight, bn.bias, bn.num_features))
        self.margin_bn = name
        print_log(f'OFDTeacherConnector: margin of {context.recorder!r} from teacher BN '
                  f'{name!r}.', logger='current')

    def set_margin(self, margin: torch.Tensor) -> None:
        """Store ``margin`` (shape (C,)) and mark it ready."""
        self.margin.copy_(margin.reshape(self.margin.shape).to(self.margin))
        self.margin_ready.fill_(True)
        self._ready = True

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = bool(self.margin_ready)

    # -- margin measured from data (OverhaulFeatureDistillation.measure_empirical_margins) --
    def start_measuring(self) -> None:
        """Reset the running sums of the empirical margin."""
        self._negative_sum = torch.zeros(self.in_channels, dtype=torch.float64)
        self._negative_count = torch.zeros(self.in_channels, dtype=torch.float64)

    @torch.no_grad()
    def accumulate(self, feature: torch.Tensor) -> None:
        """Add the negative responses of one teacher feature (B, C, ...) to the sums."""
        if self._negative_sum is None:
            raise RuntimeError('OFDTeacherConnector.accumulate called before start_measuring.')
        values = feature.detach().transpose(0, 1).reshape(self.in_channels, -1).double().cpu()
        negative = values.clamp(max=0)
        self._negative_sum += negative.sum(dim=1)
        self._negative_count += (values < 0).sum(dim=1)

    def measuring_state(self) -> Dict[str, torch.Tensor]:
        """The running sums (``negative_sum``, ``negative_count``), e.g. to all-reduce them."""
        return dict(negative_sum=self._negative_sum, negative_count=self._negative_count)

    def finish_measuring(self) -> None:
        """Set the margin to the mean negative response per channel (0 where none was seen)."""
        count = self._negative_count
        margin = torch.where(count > 0, self._negative_sum / count.clamp(min=1),
                             torch.zeros_like(count))
        self.set_margin(margin)
        self._negative_sum = self._negative_count = None

    # -- forward -----------------------------------------------------------------------------
    def forward_for_shape_check(self, feature: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` once the margin is set; before (an empirical margin is measured
        after building, and ``load_teacher=False`` loads it from a checkpoint later), the
        feature unchanged: the margin ReLU keeps the shape (B, C, ...)."""
        return self(feature) if self._ready else feature

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Args:
            feature: Teacher pre-ReLU feature, shape (B, C, ...).

        Returns:
            Tensor: ``max(feature, margin)``, same shape.

        Raises:
            ConfigRuntimeError: The margin is not set yet.
        """
        if not self._ready:
            raise ConfigRuntimeError(
                f'OFDTeacherConnector (margin_source={self.margin_source!r}) has no margin yet. '
                + ("Add custom_hooks=[dict(type='OFDMarginHook')] to the config: it measures "
                   'the margin on training batches before training.'
                   if self.margin_source == 'empirical' else
                   'It is set from the teacher by the algorithm\'s dry run, which was switched '
                   'off (dry_run_shape=None); enable the dry run.'))
        margin = self.margin.reshape(1, -1, *([1] * (feature.dim() - 2)))
        return torch.maximum(feature, margin.to(feature.dtype))
