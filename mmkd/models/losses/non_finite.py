"""Stop training at the first step where a distillation loss is inf or NaN.

A NaN loss poisons every weight at the next optimiser step, and mmengine would go on training
(and checkpointing) the ruined model. :func:`find_non_finite` checks all the distillation losses
of a step with one device-to-host synchronisation; the distiller then raises
:class:`NonFiniteLossError` naming the loss, its taps and the iteration.
"""
from typing import Dict, Optional

import torch
from mmengine.logging import MessageHub

#: What to try, in the error message.
LIKELY_FIXES = (
    'lower the learning rate or this loss\'s loss_weight (or add gradient clipping: '
    'optim_wrapper=dict(clip_grad=dict(max_norm=...))); check the data (normalisation, '
    'corrupt images) and the teacher checkpoint for inf/NaN; under float16 AMP, activations '
    'above 65504 overflow in the forward pass, where loss scaling cannot help: use '
    "optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic') "
    'or float32.')


class NonFiniteLossError(FloatingPointError):
    """A distillation loss became inf or NaN during training.

    Not a config mistake but a divergence (or bad data), so it keeps its traceback; it derives
    from :class:`FloatingPointError`, the built-in error for failed floating-point arithmetic.
    """


def find_non_finite(losses: Dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first loss holding an inf or NaN, or ``None`` when all are finite.

    All losses are checked at once (one host synchronisation per step; mmengine synchronises
    anyway when it logs the losses); the losses are searched one by one only after a failure.

    Args:
        losses: Loss name -> loss tensor (usually scalars), on one device.

    Returns:
        str, optional: The first non-finite loss's name.
    """
    if not losses:
        return None
    values = torch.cat([value.detach().reshape(-1).float() for value in losses.values()])
    if bool(torch.isfinite(values).all()):
        return None
    return next(name for name, value in losses.items()
                if not bool(torch.isfinite(value.detach()).all()))


def current_iteration() -> Optional[int]:
    """The runner's current training iteration (0-based, set by mmengine's
    ``RuntimeInfoHook`` before each step), or ``None`` outside a runner."""
    return MessageHub.get_current_instance().get_info('iter')


def describe_value(value: torch.Tensor) -> str:
    """``'nan'``, ``'inf'``, ``'-inf'`` for a scalar, else how many elements are not finite."""
    value = value.detach()
    if value.numel() == 1:
        return str(value.item())
    return f'{int((~torch.isfinite(value)).sum())} of {value.numel()} elements not finite'
