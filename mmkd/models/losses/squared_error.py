"""The summed squared error of a student feature against a constant teacher feature, as one
autograd function (OFD's partial L2 and FitNets' hint loss).

The eager formula (``(S - T).pow(2).sum()``) keeps the difference for the backward pass and
builds the gradient in three passes with two temporaries the feature's size (the expanded
upstream gradient, ``pow``'s derivative); :class:`SquaredErrorSum` keeps the difference only
and computes the gradient in one multiplication. On detection feature maps (stride 4) these
temporaries set the step's peak memory.
"""
from typing import Any, Optional, Tuple

import torch


class SquaredErrorSum(torch.autograd.Function):
    """``scale * sum(D^2)`` with ``D = S - T``, the teacher a constant (no gradient).

    With ``partial=True``, ``D = 0`` where ``S <= T <= 0`` (OFD's partial L2: where the
    teacher's response is negative and the student already below it). Forward: ``D``
    (masked in place), then ``scale * sum(D^2)``; only ``D`` is saved. Backward:
    ``dL/dS = 2 * scale * D * g``.
    """

    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, teacher: torch.Tensor, scale: float,
                partial: bool) -> torch.Tensor:
        """Args:
            student: Student feature, any shape.
            teacher: Teacher feature, same shape and dtype.
            scale: Factor of the sum.
            partial: Skip the elements where ``S <= T <= 0``.

        Returns:
            Tensor: Scalar, the inputs' dtype.
        """
        difference = torch.sub(student, teacher)
        if partial:
            skip = teacher.le(0)
            skip &= difference.le(0)
            difference.masked_fill_(skip, 0.0)
            del skip
        ctx.scale = scale
        ctx.save_for_backward(difference)
        return difference.square().sum() * scale

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor
                 ) -> Tuple[Optional[torch.Tensor], None, None, None]:
        student_grad = None
        if ctx.needs_input_grad[0]:
            difference, = ctx.saved_tensors
            student_grad = difference * (2.0 * ctx.scale * grad_output)
        return student_grad, None, None, None


def squared_error_sum(student: torch.Tensor, teacher: torch.Tensor, scale: float = 1.0,
                      partial: bool = False) -> torch.Tensor:
    """``scale * sum((student - teacher)^2)`` through :class:`SquaredErrorSum`, the teacher
    detached (the same value and student gradient as the eager formula, less memory).

    Args:
        student: Student feature, any shape, e.g. (B, C, H, W).
        teacher: Teacher feature of the same shape (its gradient is never computed).
        scale: Factor of the sum.
        partial: OFD's partial L2 (skip ``S <= T <= 0``).

    Returns:
        Tensor: Scalar.

    Examples:
        >>> student = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
        >>> teacher = torch.tensor([0.0, -1.0, 1.0])
        >>> squared_error_sum(student, teacher).item()  # 1 + 1 + 0.25
        2.25
        >>> squared_error_sum(student, teacher, partial=True).item()  # -2 <= -1 <= 0 skipped
        1.25
    """
    if student.shape != teacher.shape:
        raise ValueError(f'squared_error_sum: student shape {tuple(student.shape)} != teacher '
                         f'shape {tuple(teacher.shape)}.')
    teacher = teacher.detach().to(student.dtype)
    return SquaredErrorSum.apply(student, teacher, float(scale), bool(partial))
