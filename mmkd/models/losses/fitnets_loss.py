from typing import Tuple

import torch
import torch.nn as nn

from mmkd.registry import MODELS
from .precision import float32_reduction
from .squared_error import squared_error_sum
from .validation import check_choice, check_loss_weight

REDUCTIONS = ('mean', 'batchmean')


@MODELS.register_module()
class FitNetsLoss(nn.Module):
    """FitNets' hint loss: mean squared error between a (connected) student feature and a teacher
    feature (Romero et al., ICLR 2015).

    ``loss_weight * mean((student - teacher)^2)`` with ``reduction='mean'`` (RepDistiller's
    choice), or the sum over all elements divided by the batch size with
    ``reduction='batchmean'``. Computed in float32 on half-precision inputs, as one autograd
    function that keeps only the difference for the backward pass
    (:func:`~mmkd.models.losses.squared_error.squared_error_sum`).

    Args:
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
        reduction: ``'mean'`` or ``'batchmean'``. Defaults to ``'mean'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean') -> None:
        super().__init__()
        self.loss_weight = check_loss_weight(self, loss_weight)
        self.reduction = check_choice(self, 'reduction', reduction, REDUCTIONS)

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Student feature, any shape (B, ...), after its connector.
            teacher: Teacher feature of the same shape.

        Returns:
            Tensor: Scalar loss, float32.
        """
        scale, _ = self.squared_error_terms(student)
        return squared_error_sum(student, teacher, scale)

    def squared_error_terms(self, student: torch.Tensor) -> Tuple[float, bool]:
        """This loss as ``scale * sum((S - T)^2)``: (scale, partial mask), for losses that
        sum it over several teachers at once (:class:`TeKAPFeatureLoss`)."""
        count = student.numel() if self.reduction == 'mean' else student.shape[0]
        return self.loss_weight / count, False
