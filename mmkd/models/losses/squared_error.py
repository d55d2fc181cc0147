"""The summed squared error of a student feature against a constant teacher feature, as one
autograd function (OFD's partial L2 and FitNets' hint loss).

The eager formula (``(S - T).pow(2).sum()``) keeps the difference for the backward pass and
builds the gradient in three passes with two temporaries the feature's size (the expanded
upstream gradient, ``pow``'s derivative); :class:`SquaredErrorSum` keeps the difference only
and computes the gradient in one multiplication. On detection feature maps (stride 4) these
temporaries set the step's peak memory.
"""
from typing import Any, Optional, Sequence, Tuple

import torch


# elements per slice of ``sum_of_squares``: a 1 MiB float32 temporary, large enough that summing
# the slices' sums costs no time and changes the float32 result only in its last bits
SUM_OF_SQUARES_SLICE = 1 << 18


def flat_in_memory_order(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s elements as one dimension in the order they lie in memory: a view (no copy)
    for a tensor dense in some order of its dimensions, e.g. channels-last (B, H, W, C) memory
    of a (B, C, H, W) tensor, where ``reshape(-1)`` would copy it. For order-free reductions.
    """
    if tensor.is_contiguous():
        return tensor.view(-1)
    order = sorted(range(tensor.dim()), key=lambda dim: tensor.stride(dim), reverse=True)
    return tensor.permute(order).reshape(-1)


def sum_of_squares(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.square().sum()`` without a temporary the tensor's size: squared and summed in
    slices of ``SUM_OF_SQUARES_SLICE`` elements (one slice: the same bits as the formula).

    On a stride-4 detection map the full-size square was the step's peak memory (8 MiB more,
    in the first stage's loss). Half-precision slices are summed in float32.

    Args:
        tensor: Any shape, e.g. a difference map (B, C, H, W), in any memory layout.

    Returns:
        Tensor: Scalar of ``tensor``'s dtype.
    """
    flat = flat_in_memory_order(tensor)
    if flat.numel() <= SUM_OF_SQUARES_SLICE:
        return flat.square().sum()
    accumulate = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else None
    total = sum(part.square().sum(dtype=accumulate) for part in flat.split(SUM_OF_SQUARES_SLICE))
    return total.to(tensor.dtype)


def masked_difference(student: torch.Tensor, teacher: torch.Tensor,
                      partial: bool) -> torch.Tensor:
    """``S - T`` (a new tensor), zero where ``S <= T <= 0`` when ``partial`` (OFD's mask)."""
    difference = torch.sub(student, teacher)
    if partial:
        skip = teacher.le(0)
        skip &= difference.le(0)
        difference.masked_fill_(skip, 0.0)
    return difference


class SquaredErrorSum(torch.autograd.Function):
    """``scale * sum(D^2)`` with ``D = S - T``, the teacher a constant (no gradient).

    With ``partial=True``, ``D = 0`` where ``S <= T <= 0`` (OFD's partial L2: where the
    teacher's response is negative and the student already below it). Forward: ``D``
    (masked in place), then ``scale * sum(D^2)`` (:func:`sum_of_squares`: no second tensor
    of ``D``'s size); only ``D`` is saved. Backward:
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
        difference = masked_difference(student, teacher, partial)
        ctx.scale = scale
        ctx.save_for_backward(difference)
        return sum_of_squares(difference) * scale

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


class SquaredErrorSumOverTargets(torch.autograd.Function):
    """``sum_k scale_k * sum(D_k^2)``, ``D_k = S - T_k``, for several constant targets ``T_k``
    (TeKAP's clean and noisy teacher views), keeping one tensor for the backward pass.

    The gradient ``dL/dS = g * sum_k 2 * scale_k * D_k`` is known in the forward pass: it is
    accumulated there, one target at a time, and only that sum is saved (instead of one
    difference per target). ``partial=True`` masks each ``D_k`` as :class:`SquaredErrorSum`.
    """

    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, targets: Sequence[torch.Tensor],
                scales: Sequence[float], partial: bool) -> torch.Tensor:
        """Args:
            student: Student feature, any shape.
            targets: Teacher features, each of the student's shape and dtype.
            scales: The factor of each target's sum.
            partial: Skip the elements where ``S <= T_k <= 0``.

        Returns:
            Tensor: Scalar, the inputs' dtype.
        """
        total = student.new_zeros(())
        gradient = torch.zeros_like(student)
        for target, scale in zip(targets, scales):
            difference = masked_difference(student, target, partial)
            total = total + sum_of_squares(difference) * scale
            gradient.add_(difference, alpha=2.0 * scale)
            del difference
        ctx.save_for_backward(gradient)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor
                 ) -> Tuple[Optional[torch.Tensor], None, None, None]:
        student_grad = None
        if ctx.needs_input_grad[0]:
            gradient, = ctx.saved_tensors
            student_grad = gradient * grad_output
        return student_grad, None, None, None


def squared_error_sum_over_targets(student: torch.Tensor, targets: Sequence[torch.Tensor],
                                   scales: Sequence[float], partial: bool = False
                                   ) -> torch.Tensor:
    """``sum_k scales[k] * squared_error_sum(student, targets[k], partial=partial)`` through
    :class:`SquaredErrorSumOverTargets` (one saved tensor however many targets).

    Args:
        student: Student feature, any shape, e.g. (B, C, H, W).
        targets: Teacher features of the same shape (never given a gradient), e.g. a tensor
            (K, B, C, H, W) or a list of K tensors.
        scales: K factors.
        partial: OFD's partial L2 (skip ``S <= T <= 0``).

    Returns:
        Tensor: Scalar.

    Examples:
        >>> student = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> targets = [torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])]
        >>> squared_error_sum_over_targets(student, targets, [1.0, 0.5]).item()  # 1 + 0.5 * 4
        3.0
    """
    targets = [target.detach().to(student.dtype) for target in targets]
    if len(targets) != len(scales):
        raise ValueError(f'squared_error_sum_over_targets: {len(targets)} targets and '
                         f'{len(scales)} scales.')
    for target in targets:
        if target.shape != student.shape:
            raise ValueError(f'squared_error_sum_over_targets: student shape '
                             f'{tuple(student.shape)} != target shape {tuple(target.shape)}.')
    return SquaredErrorSumOverTargets.apply(student, targets, [float(s) for s in scales],
                                            bool(partial))
