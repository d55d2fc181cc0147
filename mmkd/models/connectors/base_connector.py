import inspect
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from mmengine.model import BaseModule

_dry_run_depth = 0


@contextmanager
def connector_dry_run() -> Iterator[None]:
    """Marks the algorithm's build-time shape check, in which connectors run once before
    :meth:`BaseConnector.init_from_teacher` (see :meth:`BaseConnector.in_dry_run`)."""
    global _dry_run_depth
    _dry_run_depth += 1
    try:
        yield
    finally:
        _dry_run_depth -= 1


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


class BaseConnector(BaseModule):
    """Maps one recorded feature to the form its distillation loss compares.

    Student connectors (e.g. OFD's and FitNets' 1x1 conv + BN) train with the student and are
    dropped at inference; teacher connectors (e.g. OFD's margin ReLU) transform the teacher's
    feature and hold no trainable parameters.

    Channel arguments that a config leaves out (``in_channels``, ``out_channels``) are filled from
    the feature shapes seen in the algorithm's dry run, see :meth:`complete_cfg`.
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

    @staticmethod
    def in_dry_run() -> bool:
        """Whether the algorithm's build-time shape check is running: a teacher connector whose
        state is not set up yet (it is, right after this check) may pass its input through."""
        return _dry_run_depth > 0

    def init_from_teacher(self, context) -> None:
        """Set up state that depends on the loaded teacher (e.g. OFD's margins).

        Called once by the algorithm after the teacher checkpoint is loaded, for teacher
        connectors only. Default: nothing.

        Args:
            context (TeacherTapContext): The teacher, the tap's recorder and a way to run the
                teacher on the dry-run input.
        """

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
