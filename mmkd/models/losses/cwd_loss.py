"""CWD: channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021)."""
import torch
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ShapeMismatchError
from .kd_loss import TemperatureLoss
from .levels import CONNECTOR_FIX, Levels, paired_levels
from .precision import float32_reduction


@float32_reduction
def channel_wise_divergence(student: torch.Tensor, teacher: torch.Tensor,
                            tau: float) -> torch.Tensor:
    """``tau^2 * KL(p_t || p_s)`` of every channel map, ``p = softmax(x / tau)`` over positions.

    Each channel of each sample is turned into a distribution over its ``H * W`` positions;
    the divergence is summed over the positions (not averaged). Computed in float32 with
    ``log_softmax`` on both sides.

    Args:
        student: Student map, shape (B, C, H, W).
        teacher: Teacher map, the same shape.
        tau: Temperature.

    Returns:
        Tensor: Divergence of each (sample, channel) map, shape (B, C).
    """
    log_p_student = F.log_softmax(student.flatten(2) / tau, dim=2)
    log_p_teacher = F.log_softmax(teacher.flatten(2) / tau, dim=2)
    per_position = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    return per_position.sum(dim=2) * tau**2


@MODELS.register_module()
class CWDLoss(TemperatureLoss):
    """Channel-wise distillation (CWD, Shu et al., ICCV 2021).

    Every channel map of the teacher and the student becomes a distribution over the spatial
    positions, ``p = softmax(x / tau)`` over the ``H * W`` positions of one (sample, channel);
    the student matches the teacher's distribution of each channel::

        L = loss_weight * tau^2 / (B * C)
            * sum_{b, c} sum_{i in H*W} p_t(b, c, i) * log(p_t(b, c, i) / p_s(b, c, i))

    i.e. the KL divergence summed over the positions, averaged over the ``B * C`` maps, times
    ``tau^2``. This is the normalisation of the official code (TorchDistiller's
    ``CriterionCWD`` with ``norm_type='channel'``) and of MMRazor's ``ChannelWiseDivergence``.
    Unlike the official code it takes ``log_softmax`` of the student instead of the logarithm
    of its softmax, which is ``-inf`` where the softmax underflows to 0.

    On the levels of a pyramid (a tuple, e.g. the neck's output) each level is normalised by
    its own ``B * C`` and the levels are summed, as one loss per level would be. The teacher
    gets no gradient. Computed in float32 on half-precision inputs.

    The papers' settings: segmentation logits ``tau=4, loss_weight=3`` (official code);
    MMRazor's Cityscapes PSPNet and COCO GFL classification-head configs ``tau=1,
    loss_weight=5`` (per pyramid level).

    Args:
        tau: Temperature (> 0). Defaults to 1.0.
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
    """

    @float32_reduction
    def forward(self, student: Levels, teacher: Levels) -> torch.Tensor:
        """Args:
            student: Student logits or feature map, shape (B, C, H, W), or a tuple of such
                maps, one per pyramid level.
            teacher: Teacher maps of the same shapes.

        Returns:
            Tensor: Scalar loss, float32.

        Raises:
            ShapeMismatchError: A student map and its teacher map differ in shape.
        """
        total = 0.0
        for index, (s, t) in enumerate(paired_levels('CWDLoss', student, teacher)):
            if s.shape != t.shape:
                raise ShapeMismatchError(
                    f'CWDLoss: level {index} has shape {tuple(s.shape)} in the student and '
                    f'{tuple(t.shape)} in the teacher; CWD compares channel maps one to one. '
                    + CONNECTOR_FIX)
            divergence = channel_wise_divergence(s, t.detach(), self.tau)
            total = total + divergence.sum() / (s.shape[0] * s.shape[1])
        return self.loss_weight * total
