"""PKD: feature imitation with the Pearson correlation coefficient (Cao et al., "PKD: General
Distillation Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError
from .levels import CONNECTOR_FIX, Levels, paired_levels
from .precision import float32_reduction
from .validation import check_loss_weight

#: Added to the standard deviation before dividing by it (as in MMRazor's PKDLoss).
EPS = 1e-6


def normalize_per_channel(feature: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Zero mean and unit standard deviation per channel, over the batch and the positions.

    ``(x - mean_c) / (std_c + eps)`` where ``mean_c`` and the unbiased ``std_c`` are taken over
    the ``n = B * H * W`` values of channel ``c`` together (not per sample). With ``n = 1``
    (one sample, a 1x1 map) the standard deviation is undefined; the normalised map is then
    zero, as ``x - mean_c`` is.

    Args:
        feature: Shape (B, C, H, W).
        eps: Added to the standard deviation.

    Returns:
        Tensor: Shape (B, C, H, W).
    """
    values = feature.transpose(0, 1).flatten(1)  # (C, B * H * W)
    mean = values.mean(dim=1, keepdim=True)
    if values.shape[1] > 1:
        std = values.std(dim=1, keepdim=True)
    else:
        std = torch.zeros_like(mean)
    normalized = (values - mean) / (std + eps)
    batch, channels, height, width = feature.shape
    return normalized.reshape(channels, batch, height, width).transpose(0, 1)


@float32_reduction
def pearson_imitation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean((n_s - n_t)^2) / 2`` of the per-channel normalised maps of one level.

    Equals ``mean_c ((n - 1) / n) (1 - r_c)`` up to ``eps``, ``r_c`` the Pearson correlation
    of channel ``c`` of the two maps over its ``n = B * H * W`` values. Computed in float32.

    Args:
        student: Student map, shape (B, C, H, W), already at the teacher's size.
        teacher: Teacher map, the same shape.

    Returns:
        Tensor: Scalar.
    """
    return F.mse_loss(normalize_per_channel(student), normalize_per_channel(teacher)) / 2


@MODELS.register_module()
class PKDLoss(nn.Module):
    """PKD: the student imitates the teacher's features up to a per-channel affine map (Cao et
    al., NeurIPS 2022).

    Each map is normalised per channel over the batch and the positions together (zero mean,
    unit unbiased standard deviation + 1e-6, :func:`normalize_per_channel`), then::

        L = loss_weight * sum_levels mean_{b,c,h,w} (n_s - n_t)^2 / 2

    which is ``mean_c ((n - 1) / n) (1 - r_c)``, one minus the Pearson correlation of each
    channel, ``n = B * H * W``: magnitude and offset differences between the two detectors'
    features (and between pyramid levels) do not count. When a student map and its teacher map
    differ in spatial size, the student is resized bilinearly (``align_corners=False``) to the
    teacher's size (``resize_stu=True``), or the teacher to the student's. MMRazor's
    ``PKDLoss`` (the authors' implementation) computes the same; it resizes only when the
    heights differ and asserts otherwise, where this loss compares both sides.

    Takes one map or the levels of a pyramid (a tuple, e.g. the whole neck's output; the
    levels are summed). The teacher gets no gradient. Computed in float32 on half-precision
    inputs. Channels must agree (PKD distils necks of equal width).

    Args:
        loss_weight: Weight of the loss (> 0), per level. MMRazor's configs: 6 (Faster
            R-CNN), 10 (RetinaNet). Defaults to 1.0.
        resize_stu: Resize the student to the teacher's size (``True``) or the teacher to the
            student's (``False``). Defaults to True.
    """

    #: The distiller's dry run must not refuse maps of different sizes: this loss resizes.
    compares_shapes = False

    def __init__(self, loss_weight: float = 1.0, resize_stu: bool = True) -> None:
        super().__init__()
        self.loss_weight = check_loss_weight(self, loss_weight)
        if not isinstance(resize_stu, bool):
            raise ConfigError(f'PKDLoss: resize_stu must be True or False, got {resize_stu!r}. '
                              'Fix: set resize_stu=True (resize the student to the teacher) '
                              'or False.')
        self.resize_stu = resize_stu

    @float32_reduction
    def forward(self, student: Levels, teacher: Levels) -> torch.Tensor:
        """Args:
            student: Student map (B, C, H, W) or a tuple of maps, one per pyramid level.
            teacher: Teacher maps, the same batch size and channels; spatial sizes may differ.

        Returns:
            Tensor: Scalar loss, float32.

        Raises:
            ShapeMismatchError: Batch sizes or channels of a level differ.
        """
        total = 0.0
        for index, (s, t) in enumerate(paired_levels('PKDLoss', student, teacher)):
            if s.shape[:2] != t.shape[:2]:
                raise ShapeMismatchError(
                    f'PKDLoss: level {index} has (batch, channels) {tuple(s.shape[:2])} in the '
                    f'student and {tuple(t.shape[:2])} in the teacher; PKD normalises each '
                    'channel and compares it with the same channel. ' + CONNECTOR_FIX)
            total = total + self._level_loss(s, t.detach())
        return self.loss_weight * total

    @float32_reduction
    def _level_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """One level: resize to a common size, then :func:`pearson_imitation` (float32, also
        when the levels come in a tuple, which the decorator of ``forward`` does not cast)."""
        if student.shape[2:] != teacher.shape[2:]:
            if self.resize_stu:
                student = F.interpolate(student, size=teacher.shape[2:], mode='bilinear',
                                        align_corners=False)
            else:
                teacher = F.interpolate(teacher, size=student.shape[2:], mode='bilinear',
                                        align_corners=False)
        return pearson_imitation(student, teacher)
