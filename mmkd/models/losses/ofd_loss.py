"""OFD's distillation loss: partial L2 between the connected student and the margin-rectified
teacher, summed and normalised.

The loss runs as one autograd function (:class:`~.squared_error.SquaredErrorSum` with
``partial=True``): its forward keeps only the masked difference ``S - T`` (one tensor the
student's size) and its backward is one multiplication. The eager formula (:func:`partial_l2`, then ``sum``) keeps the difference, the
mask and the squared map's gradient chain, four passes and three temporaries in the backward.
"""
from typing import Tuple

import torch
import torch.nn as nn

from mmkd.registry import MODELS
from .precision import float32_reduction
from .squared_error import squared_error_sum
from .validation import check_loss_weight, check_positive


def partial_l2(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2 distance, element-wise.

    ``(teacher - student)^2`` everywhere except where ``student <= teacher <= 0``: there the
    teacher's response is negative (a ReLU would zero it) and the student is already below it,
    so no gradient pushes the student up.

    Args:
        student: Student feature, any shape.
        teacher: Teacher feature (usually after the margin ReLU), same shape.

    Returns:
        Tensor: Element-wise distance, same shape.
    """
    skip = (student <= teacher) & (teacher <= 0)
    return (teacher - student).pow(2).masked_fill(skip, 0.0)


def partial_l2_sum(student: torch.Tensor, teacher: torch.Tensor,
                   scale: float = 1.0) -> torch.Tensor:
    """``scale * partial_l2(student, teacher).sum()``, the teacher detached, through
    :class:`~mmkd.models.losses.squared_error.SquaredErrorSum` (same value and student
    gradient as the eager formula, less memory and fewer passes).

    Args:
        student: Student feature, any shape, e.g. (B, C, H, W).
        teacher: Teacher feature of the same shape (its gradient is never computed).
        scale: Factor of the sum.

    Returns:
        Tensor: Scalar.
    """
    return squared_error_sum(student, teacher, scale, partial=True)


@MODELS.register_module()
class OFDLoss(nn.Module):
    """The distillation loss of OFD (Heo et al., ICCV 2019): partial L2, summed.

    ``loss_weight * sum(partial_l2(S, T)) / (B * divisor)``, where ``T`` is the teacher's
    pre-ReLU feature after the margin ReLU (:class:`OFDTeacherConnector`) and ``S`` the
    student's pre-ReLU feature after its 1x1 conv + BN (:class:`ConvBNConnector`).

    The official code divides the summed distance by the batch size and by 1000 on CIFAR or
    10000 on ImageNet (``divisor``); each stage ``i`` of ``N`` is further divided by
    ``2^(N-i-1)`` (``loss_weight``: 1 for the last stage, 1/2 for the one before, ...).
    Segmentation in the paper multiplies by 1e-5 instead (``divisor=1e5``). The sum runs in
    float32 on half-precision inputs (in float16 it overflows above 65504).

    Args:
        loss_weight: Weight of this tap (> 0), e.g. ``1 / 2**(N - i - 1)``. Defaults to 1.0.
        divisor: The paper's normalisation (> 0): 1000 (CIFAR, the default), 10000
            (ImageNet), 1e5 (segmentation).
    """

    def __init__(self, loss_weight: float = 1.0, divisor: float = 1000.0) -> None:
        super().__init__()
        self.loss_weight = check_loss_weight(self, loss_weight)
        self.divisor = check_positive(
            self, 'divisor', divisor,
            fix='the normalisation: 1000 (CIFAR), 10000 (ImageNet) or 1e5 (segmentation)')

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Student feature after its connector, shape (B, C, H, W).
            teacher: Teacher feature after the margin ReLU, shape (B, C, H, W).

        Returns:
            Tensor: Scalar loss, float32.
        """
        scale, _ = self.squared_error_terms(student)
        return partial_l2_sum(student, teacher, scale)

    def squared_error_terms(self, student: torch.Tensor) -> Tuple[float, bool]:
        """This loss as ``scale * sum((S - T)^2)``: (scale, partial mask), for losses that
        sum it over several teachers at once (:class:`TeKAPFeatureLoss`)."""
        return self.loss_weight / (student.shape[0] * self.divisor), True
