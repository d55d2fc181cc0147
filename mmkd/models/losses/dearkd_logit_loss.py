"""Logit distillation into DeiT's distillation token (hard or soft), as DearKD uses it."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError
from .kd_loss import TAU_FIX, kl_divergence_with_temperature
from .precision import float32_reduction
from .validation import check_choice, check_loss_weight, check_number, check_positive

MODES = ('hard', 'soft')


@MODELS.register_module()
class DearKDLogitLoss(nn.Module):
    """DeiT's distillation-token loss (Touvron et al., ICML 2021), used by DearKD's stage 1.

    - ``mode='hard'``: ``loss_weight * CE(z_dist, argmax z_t)``, the teacher's decision as
      the label (DeiT's hard-label distillation; with ``loss_weight=0.5`` and the student
      head's ``1/2 CE(z_cls, y)`` it is DeiT's objective).
    - ``mode='soft'``: ``loss_weight * KL(softmax(z_t / T) || softmax(z_dist / T)) * T^2``.

    Map ``student`` to the distillation-token logits (``ModuleOutputs`` of
    ``head.layers.head_dist``) and ``teacher`` to the teacher's logits.
    Computed in float32 on half-precision inputs.

    Args:
        mode: ``'hard'`` or ``'soft'``. Defaults to ``'hard'``.
        tau: Temperature of the soft mode (> 0). Defaults to 3, DeiT's soft setting.
        label_smoothing: Smoothing of the teacher's hard label, in [0, 1). Defaults to 0
            (DeiT).
        loss_weight: Weight (> 0). Defaults to 0.5.
    """

    def __init__(self, mode: str = 'hard', tau: float = 3.0, label_smoothing: float = 0.0,
                 loss_weight: float = 0.5) -> None:
        super().__init__()
        self.mode = check_choice(self, 'mode', mode, MODES)
        self.tau = check_positive(self, 'tau', tau, fix=TAU_FIX)
        self.label_smoothing = check_number(
            self, 'label_smoothing', label_smoothing, low=0, high=1, high_open=True,
            fix='the smoothing of the hard label, e.g. 0.1 (0 for none)')
        if mode == 'soft' and label_smoothing:
            raise ConfigError('DearKDLogitLoss: label_smoothing applies to mode="hard" only. '
                              'Fix: remove label_smoothing, or use mode="hard".')
        self.loss_weight = check_loss_weight(self, loss_weight)

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Distillation-token logits, shape (B, K).
            teacher: Teacher logits, shape (B, K).

        Returns:
            Tensor: Scalar loss, float32.
        """
        teacher = teacher.detach()
        if self.mode == 'hard':
            loss = F.cross_entropy(student, teacher.argmax(dim=1),
                                   label_smoothing=self.label_smoothing)
        else:
            loss = kl_divergence_with_temperature(student, teacher, self.tau).mean()
        return self.loss_weight * loss
