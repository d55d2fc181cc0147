import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from .precision import float32_reduction
from .validation import check_loss_weight, check_positive

#: The message's "Fix: set tau to ..." for every softmax temperature.
TAU_FIX = 'the softmax temperature, e.g. tau=4 (1 for ImageNet)'


def kl_divergence_with_temperature(student: torch.Tensor, teacher: torch.Tensor,
                                   tau: float) -> torch.Tensor:
    """``KL(softmax(teacher / tau) || softmax(student / tau)) * tau^2``, summed over classes.

    Args:
        student: Student logits, shape (B, K) or (B, K, ...) (e.g. per pixel, (B, K, H, W)).
        teacher: Teacher logits, the same shape.
        tau: Temperature.

    Returns:
        Tensor: Divergence per sample (and position), shape (B,) or (B, ...).
    """
    log_p_student = F.log_softmax(student / tau, dim=1)
    log_p_teacher = F.log_softmax(teacher / tau, dim=1)
    per_class = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    return per_class.sum(dim=1) * tau**2


class TemperatureLoss(nn.Module):
    """Base of the losses that compare softmax distributions at a temperature ``tau``: keeps
    ``tau`` and ``loss_weight``, both checked at build (> 0, finite).

    Args:
        tau: Temperature (> 0). Defaults to 1.0.
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.tau = check_positive(self, 'tau', tau, fix=TAU_FIX)
        self.loss_weight = check_loss_weight(self, loss_weight)


@MODELS.register_module()
class KDLoss(TemperatureLoss):
    """Hinton et al.'s knowledge distillation loss.

    ``loss_weight * mean_b KL(softmax(z_t / T) || softmax(z_s / T)) * T^2``: the ``T^2`` factor
    keeps the gradient scale independent of the temperature, as in the paper. On logits of
    shape (B, K, H, W) (a segmentation head's) it is pixel-wise KD: the KL divergence over the
    classes of each pixel, averaged over the batch and the pixels.

    Computed in float32 on half-precision inputs (see :func:`float32_reduction`).

    Args:
        tau: Temperature ``T`` (> 0). Defaults to 4 (the CIFAR setting of
            RepDistiller/mdistiller).
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
    """

    def __init__(self, tau: float = 4.0, loss_weight: float = 1.0) -> None:
        super().__init__(tau, loss_weight)

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Student logits, shape (B, K) or (B, K, ...).
            teacher: Teacher logits, the same shape.

        Returns:
            Tensor: Scalar loss, float32.
        """
        teacher = teacher.detach()
        return self.loss_weight * kl_divergence_with_temperature(student, teacher, self.tau).mean()
