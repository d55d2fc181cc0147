"""FSP: the flow of solution procedure (Yim et al., "A Gift from Knowledge Distillation", CVPR 2017)."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from .precision import float32_reduction
from .validation import check_choice, check_loss_weight

REDUCTIONS = ('batchmean', 'mean')


def pool_to_common_size(first: torch.Tensor,
                        second: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger of two feature maps to the smaller one's spatial size.

    Adaptive average pooling to ``(min(H1, H2), min(W1, W2))``; a map already of that size is
    returned unchanged: for a stage that begins with a stride-2 block, its input has twice the
    resolution of its output (RepDistiller pools by averaging too; torchdistill by max).

    Args:
        first: Shape (B, C1, H1, W1).
        second: Shape (B, C2, H2, W2).

    Returns:
        tuple[Tensor, Tensor]: Shapes (B, C1, H, W) and (B, C2, H, W).
    """
    size = (min(first.shape[2], second.shape[2]), min(first.shape[3], second.shape[3]))
    return tuple(x if tuple(x.shape[2:]) == size else F.adaptive_avg_pool2d(x, size)
                 for x in (first, second))


@float32_reduction
def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The FSP matrix ``G_ij = sum_{h,w} F1[i, h, w] * F2[j, h, w] / (H * W)`` of each sample.

    Computed in float32 (a sum over ``H * W`` positions overflows float16 on large maps).

    Args:
        first: The map at the start of the flow, shape (B, C1, H1, W1).
        second: The map at its end, shape (B, C2, H2, W2); the larger map is pooled to the
            smaller size first (:func:`pool_to_common_size`).

    Returns:
        Tensor: Shape (B, C1, C2).
    """
    if first.dim() != 4 or second.dim() != 4:
        raise ValueError(f'FSP needs feature maps (B, C, H, W); got shapes '
                         f'{tuple(first.shape)} and {tuple(second.shape)}.')
    if first.shape[0] != second.shape[0]:
        raise ValueError(f'FSP: the two maps have batch sizes {first.shape[0]} and '
                         f'{second.shape[0]}.')
    first, second = pool_to_common_size(first, second)
    height, width = first.shape[2:]
    return torch.bmm(first.flatten(2), second.flatten(2).transpose(1, 2)) / (height * width)


@MODELS.register_module()
class FSPLoss(nn.Module):
    """Squared L2 distance between the teacher's and the student's FSP matrices of one pair of
    taps (F1, F2), e.g. the input and the output of a ResNet stage.

    ``loss_weight * (1/B) sum_b ||G_t(b) - G_s(b)||_2^2`` (``reduction='batchmean'``, the
    paper's formula with one ``lambda_i = loss_weight`` per pair), or the mean over the
    matrix elements (``'mean'``, RepDistiller's choice). The teacher gets no gradient. The
    matrices and their distance are computed in float32, whatever the inputs' precision.

    Declare one loss per pair with the ``taps`` form of ``tap_pairs``::

        dict(name='fsp_layer1', student='backbone.layer1', loss=dict(type='FSPLoss'),
             taps=dict(first=dict(recorder='ModuleInputs'), second=dict()))

    Teacher and student must have equal channels at each tap (the paper's setting), or the
    student taps need a connector (``student_connector=dict(type='ConvBNConnector')``, its
    channels filled from the dry run); otherwise the build fails naming the tap.

    Args:
        loss_weight: ``lambda`` of this pair (> 0). Defaults to 1.0.
        reduction: ``'batchmean'`` (sum over the matrix, mean over the batch) or ``'mean'``.
            Defaults to ``'batchmean'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'batchmean') -> None:
        super().__init__()
        self.loss_weight = check_loss_weight(self, loss_weight)
        self.reduction = check_choice(self, 'reduction', reduction, REDUCTIONS)

    @float32_reduction
    def forward(self, student_first: torch.Tensor, student_second: torch.Tensor,
                teacher_first: torch.Tensor, teacher_second: torch.Tensor) -> torch.Tensor:
        """Args:
            student_first: Student map at the start, shape (B, C1, H1, W1).
            student_second: Student map at the end, shape (B, C2, H2, W2).
            teacher_first: Teacher map at the start, shape (B, C1, H1', W1').
            teacher_second: Teacher map at the end, shape (B, C2, H2', W2').

        Returns:
            Tensor: Scalar loss, float32.
        """
        student = fsp_matrix(student_first, student_second)
        with torch.no_grad():
            teacher = fsp_matrix(teacher_first.detach(), teacher_second.detach())
        if student.shape != teacher.shape:
            raise ValueError(
                f'FSPLoss: the student FSP matrix is {tuple(student.shape[1:])} (channels at '
                f'its two taps) but the teacher\'s is {tuple(teacher.shape[1:])}. FSP compares '
                'matrices of equal size: tap layers where teacher and student have equal '
                "channels, or add student_connector=dict(type='ConvBNConnector') to the taps "
                '(its channels are filled from the dry run).')
        squared = (teacher - student).pow(2)
        if self.reduction == 'mean':
            return self.loss_weight * squared.mean()
        return self.loss_weight * squared.sum() / student.shape[0]
