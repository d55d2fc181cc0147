"""The prediction-mimicking losses of CrossKD (Wang et al., "CrossKD: Cross-Head Knowledge
Distillation for Object Detection", CVPR 2024), with mmdet's loss interface
(``pred, target, weight, avg_factor``) so that a detector's own losses (``mmdet.GIoULoss``) can
stand beside them."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ShapeMismatchError
from .kd_loss import TemperatureLoss, kl_divergence_with_temperature
from .precision import float32_reduction
from .validation import check_loss_weight, check_non_negative


def kd_quality_focal_loss(pred: torch.Tensor, target: torch.Tensor,
                          beta: float) -> torch.Tensor:
    """Quality focal loss with soft targets: ``BCE(sigmoid(pred), sigmoid(target)) *
    |sigmoid(pred) - sigmoid(target)|^beta``, element-wise.

    The teacher's sigmoid scores are the targets of the student's (GFL's QFL, with the
    teacher's joint class-quality score in place of the IoU label); ``beta`` focuses the loss
    on the scores that differ most.

    Args:
        pred: Student (cross-head) classification logits, shape (N, K).
        target: Teacher classification logits, shape (N, K); no gradient flows to it.
        beta: Focusing exponent (>= 0).

    Returns:
        Tensor: Shape (N, K).
    """
    soft = target.detach().sigmoid()
    bce = F.binary_cross_entropy_with_logits(pred, soft, reduction='none')
    return bce * (pred.sigmoid() - soft).abs().pow(beta)


def _reduce(loss: torch.Tensor, weight: Optional[torch.Tensor],
            avg_factor: Optional[float]) -> torch.Tensor:
    """mmdet's ``weight_reduce_loss`` with ``reduction='mean'``: weighted sum over
    ``avg_factor``, or the mean when it is ``None``."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)


def _check_pair(loss: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 2:
        raise ShapeMismatchError(
            f'{loss}: the student predictions have shape {tuple(pred.shape)} and the teacher '
            f'targets {tuple(target.shape)}; both must be (N, K), one row per anchor. The two '
            'heads must predict the same classes (num_classes) and bins (reg_max).')


@MODELS.register_module()
class KDQualityFocalLoss(nn.Module):
    """Classification distillation of CrossKD: quality focal loss towards the teacher's
    sigmoid scores (:func:`kd_quality_focal_loss`).

    ``loss_weight * sum_{n, k} w_n * qfl(pred, target)[n, k] / avg_factor`` (weights ``w``
    per anchor, broadcast over the classes; the mean over all elements when ``avg_factor`` is
    ``None``). CrossKD's configs: ``beta=1``, weight 1, ``w`` = the label weights (valid,
    non-ignored anchors) and ``avg_factor`` = the number of positive anchors. Computed in
    float32.

    Args:
        beta: Focusing exponent (>= 0). Defaults to 1.0.
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
    """

    def __init__(self, beta: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = check_non_negative(self, 'beta', beta,
                                       fix='the focusing exponent, 1 in CrossKD (2 in GFL)')
        self.loss_weight = check_loss_weight(self, loss_weight)

    @float32_reduction
    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Args:
            pred: Student logits, shape (N, K).
            target: Teacher logits, shape (N, K).
            weight: Per-anchor weights, shape (N,) (or (N, K)).
            avg_factor: Divisor of the weighted sum.

        Returns:
            Tensor: Scalar loss, float32.
        """
        _check_pair('KDQualityFocalLoss', pred, target)
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        loss = kd_quality_focal_loss(pred, target, self.beta)
        return self.loss_weight * _reduce(loss, weight, avg_factor)


@MODELS.register_module()
class KDDistributionLoss(TemperatureLoss):
    """Distillation of GFL's box distributions: per row (one side of one box, the ``reg_max +
    1`` bins of its distance distribution) ``tau^2 * KL(softmax(t / tau) || softmax(s / tau))``
    summed over the bins.

    ``loss_weight * sum_n w_n * KL_n / avg_factor``. CrossKD's GFL config: ``tau=1``, weight
    3, ``w`` = the teacher's highest class score of the anchor (each anchor's four sides),
    ``avg_factor=4`` and the result divided again by the sum of the anchors' weights. (mmdet's
    ``KnowledgeDistillationKLDivLoss`` averages over the bins instead: a factor ``reg_max + 1``
    smaller.) Computed in float32.

    Args:
        tau: Temperature (> 0). Defaults to 1.0.
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
    """

    @float32_reduction
    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Args:
            pred: Student bin logits, shape (N, reg_max + 1).
            target: Teacher bin logits, the same shape.
            weight: Per-row weights, shape (N,).
            avg_factor: Divisor of the weighted sum.

        Returns:
            Tensor: Scalar loss, float32.
        """
        _check_pair('KDDistributionLoss', pred, target)
        loss = kl_divergence_with_temperature(pred, target.detach(), self.tau)
        return self.loss_weight * _reduce(loss, weight, avg_factor)
