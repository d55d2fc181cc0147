"""The base of every connector, and where a connector's shape is filled in.

A connector maps one recorded feature to the form its distillation loss compares: a student
connector (e.g. OFD's 1x1 conv + BN) maps the student's feature to the teacher's shape, a
teacher connector (e.g. OFD's margin ReLU) transforms the teacher's feature.

A config may leave out a connector's shape arguments (``in_channels``, ``out_channels``,
``ResizeConnector``'s ``size``). They are filled in at build time by the algorithm's dry run,
``SingleTeacherDistill._dry_run`` (``mmkd/models/algorithms/single_teacher_distill.py``), in
this order:

1. The teacher and the student run once on a random batch (2, *dry_run_shape*); the
   distiller's recorders keep the tapped features.
2. ``ConfigurableDistiller.build_teacher_connectors``: each teacher connector left waiting is
   built from the shape of its recorded input, e.g. (2, C_t, H, W), by
   :meth:`BaseConnector.complete_cfg`.
3. ``ConfigurableDistiller.init_teacher_connectors``: each teacher connector sets itself up
   from the loaded teacher, :meth:`BaseConnector.init_from_teacher` with a
   :class:`TeacherTapContext` (OFD: its margins from the teacher's BN). Skipped with
   ``load_teacher=False``: that state comes from the checkpoint loaded after building.
4. ``ConfigurableDistiller.build_student_connectors_and_check``: each student connector left
   waiting is built by :meth:`BaseConnector.complete_cfg` from its input's shape and the
   teacher feature's, e.g. (2, C_s, H, W) -> (2, C_t, H, W); then every loss runs once, and a
   student/teacher shape mismatch raises naming the connector that fixes it
   (:func:`~mmkd.models.connectors.suggest.connectors_needed`).

In steps 2 and 4 connectors run through :meth:`BaseConnector.forward_for_shape_check`.
"""
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..recorders.base_recorder import BaseRecorder


def match_parameter_dtype(module: torch.nn.Module, args: tuple) -> Optional[tuple]:
    """Forward pre-hook of every connector: outside autocast, a floating-point input whose dtype
    differs from the connector's parameters is cast to theirs.

    Under mixed precision a connector meets features of another precision than its weights: a
    float32 connector gets bfloat16/float16 student features, a half-precision one a float32
    teacher feature (MMRazor issue #190), and conv/linear layers then fail with "Input type
    ... and weight type ... should be the same". Under autocast, autocast casts (this hook
    leaves the input alone); outside it the connector computes in its own precision. Connectors
    without floating-point parameters get their input unchanged.

    Args:
        module: The connector.
        args: Its positional inputs, e.g. a feature (B, C, H, W).

    Returns:
        The inputs to use, or ``None`` to keep them.
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    if dtype is None:
        return None
    return tuple(
        arg.to(dtype) if isinstance(arg, torch.Tensor) and arg.is_floating_point()
        and arg.dtype != dtype and not torch.is_autocast_enabled(arg.device.type) else arg
        for arg in args)


@dataclass
class TeacherTapContext:
    """What :meth:`BaseConnector.init_from_teacher` gets: the loaded teacher and the tap whose
    feature the connector transforms.

    Attributes:
        teacher: The teacher model, its weights loaded, in evaluation mode.
        recorder: The teacher recorder of the tap (e.g. a ``PreReLURecorder``). Its records,
            ``recorder.get_record_data(i)`` for ``i < recorder.num_records`` (one per call of
            the tapped module), hold the tapped feature of the dry-run batch, e.g. a tensor
            (2, C, H, W); the connector's input is that feature after the connectors before it.
        run_teacher: Runs the teacher once more on the dry-run batch, a random tensor
            (2, *dry_run_shape*), with the teacher recorders armed, so that hooks the connector
            registers on the teacher see the forward pass that produces the records.
    """
    teacher: nn.Module
    recorder: BaseRecorder
    run_teacher: Callable[[], None]


class BaseConnector(BaseModule):
    """Maps one recorded feature to the form its distillation loss compares.

    Student connectors (e.g. OFD's and FitNets' 1x1 conv + BN) train with the student and are
    dropped at inference; teacher connectors (e.g. OFD's margin ReLU) transform the teacher's
    feature and hold no trainable parameters.

    Shape arguments that a config leaves out (:attr:`shape_args`, by default ``in_channels``
    and ``out_channels``) are filled from the feature shapes seen in the algorithm's dry run
    (:meth:`complete_cfg`; the order of the dry run is in this module's docstring). A teacher
    connector whose state depends on the loaded teacher sets it up in
    :meth:`init_from_teacher`.

    Examples:
        >>> class Scale(BaseConnector):
        ...     def __init__(self, in_channels=None, init_cfg=None):
        ...         super().__init__(init_cfg)
        ...         self.weight = nn.Parameter(torch.ones(in_channels))
        ...     def forward(self, feature):
        ...         return feature * self.weight.view(1, -1, 1, 1)
        >>> Scale.needs_shapes(dict(type='Scale'))
        True
        >>> cfg = Scale.complete_cfg(dict(type='Scale'), (2, 16, 8, 8), (2, 32, 8, 8))
        >>> cfg
        {'type': 'Scale', 'in_channels': 16}
        >>> Scale.needs_shapes(cfg)
        False
        >>> Scale(in_channels=16)(torch.ones(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    #: Constructor arguments that :meth:`complete_cfg` may fill from the dry run.
    shape_args = ('in_channels', 'out_channels')

    def __init__(self, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.register_forward_pre_hook(match_parameter_dtype)

    @classmethod
    def complete_cfg(cls, cfg: dict, feature_shape: Sequence[int],
                     target_shape: Optional[Sequence[int]]) -> dict:
        """Fill the shape arguments that ``cfg`` leaves out.

        Args:
            cfg: The connector's config (``type`` included); not modified.
            feature_shape: Shape of the feature this connector receives, e.g. (B, C, H, W).
            target_shape: Shape of the feature it is compared with (the teacher's for a
                student connector, its own input for a teacher connector).

        Returns:
            dict: The completed config.
        """
        cfg = dict(cfg)
        params = inspect.signature(cls.__init__).parameters
        if 'in_channels' in params and cfg.get('in_channels') is None:
            cfg['in_channels'] = feature_shape[1]
        if ('out_channels' in params and cfg.get('out_channels') is None
                and target_shape is not None):
            cfg['out_channels'] = target_shape[1]
        return cfg

    @classmethod
    def needs_shapes(cls, cfg: dict) -> bool:
        """Whether ``cfg`` leaves out an argument that :meth:`complete_cfg` fills."""
        params = inspect.signature(cls.__init__).parameters
        return any(name in params and cfg.get(name) is None for name in cls.shape_args)

    def init_from_teacher(self, context: TeacherTapContext) -> None:
        """Set up state that depends on the loaded teacher (e.g. OFD's margins).

        Called once by the algorithm's dry run for teacher connectors, after the teacher
        connectors are built and before the student connectors are (not with
        ``load_teacher=False``). Default: nothing.

        Args:
            context: The teacher, the tap's recorder and a way to run the teacher on the
                dry-run batch.
        """

    def forward_for_shape_check(self, feature: Any) -> Any:
        """The output the dry run's shape check uses (steps 2 and 4 in the module docstring).

        Default: ``self(feature)``. A connector whose state may not be set up yet in the check
        (OFD's margin measured later from data, or never loaded with ``load_teacher=False``)
        overrides it to return a value of the shape ``forward`` gives.

        Args:
            feature: The connector's input, e.g. (B, C, H, W).

        Returns:
            The output, e.g. (B, C', H', W').
        """
        return self(feature)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
