"""DIST: distillation of the relations between predictions (Huang et al., "Knowledge
Distillation from A Stronger Teacher", NeurIPS 2022)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError
from .kd_loss import TAU_FIX
from .precision import float32_reduction
from .validation import check_loss_weight, check_non_negative, check_positive

#: Added to the product of the two norms in the denominator (the official code's value); a
#: pair whose product of norms is not above it has no defined correlation.
EPS = 1e-8


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The Pearson correlation of each row of ``a`` with the same row of ``b``.

    ``r = sum (a - mean a)(b - mean b) / (||a - mean a|| * ||b - mean b|| + eps)``, the official
    code's form. Where a row of ``a`` or ``b`` is constant (a batch of one sample for the
    intra-class relation, constant logits) the correlation is undefined: when the product of
    the two norms is not above ``eps`` the row's correlation is taken as 0 (no relation) and
    passes no gradient. (The official formula gives 0 there too when the row is exactly
    constant, but a student row within rounding of constant gets a gradient of order
    ``1 / eps``.)

    Args:
        a: Shape (N, D).
        b: Shape (N, D).
        eps: Added to the product of the norms, and the threshold below which a row has no
            correlation.

    Returns:
        Tensor: Shape (N,), each in [-1, 1].
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(dim=1) / (norms + eps)
    return torch.where(norms > eps, correlation, torch.zeros_like(correlation))


def inter_class_relation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - mean over samples of the Pearson correlation across the classes``.

    Args:
        student: Probabilities, shape (N, K).
        teacher: Probabilities, shape (N, K).

    Returns:
        Tensor: Scalar in [0, 2].
    """
    return 1 - pearson_correlation(student, teacher).mean()


def intra_class_relation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - mean over classes of the Pearson correlation across the samples``.

    Args:
        student: Probabilities, shape (N, K).
        teacher: Probabilities, shape (N, K).

    Returns:
        Tensor: Scalar in [0, 2]; 1 with zero gradient when N = 1.
    """
    return inter_class_relation(student.t(), teacher.t())


def logits_as_rows(logits: torch.Tensor) -> torch.Tensor:
    """Classification logits (N, K) unchanged; dense logits (B, K, H, W) (or (B, K, ...)) as
    one row per position, shape (B * H * W, K): every pixel is a sample."""
    if logits.dim() == 2:
        return logits
    return logits.movedim(1, -1).reshape(-1, logits.shape[1])


@MODELS.register_module()
class DISTLoss(nn.Module):
    """DIST (Huang et al., NeurIPS 2022): the student keeps the teacher's relations between
    predictions instead of their exact values.

    With ``y = softmax(z / tau)`` over the K classes of each sample (each pixel for dense
    logits, which become ``B * H * W`` samples)::

        inter = 1 - mean_n pearson(y_s[n, :], y_t[n, :])    # across classes, per sample
        intra = 1 - mean_k pearson(y_s[:, k], y_t[:, k])    # across samples, per class
        L = loss_weight * tau^2 * (inter_loss_weight * inter + intra_loss_weight * intra)

    ``pearson`` has ``eps = 1e-8`` on the product of the norms (official code and MMRazor's
    ``DISTLoss``). Undefined correlations count as 0 with no gradient
    (:func:`pearson_correlation`): a batch of one sample makes ``intra = 1``, a sample with
    constant logits (on either side) has inter-class correlation 0, both without gradient, so
    the loss and its gradient stay finite. The intra-class relation compares the samples of
    one process's batch; under DDP each process uses its own. The teacher gets no gradient.
    Computed in float32 on half-precision inputs.

    The papers' settings: ImageNet ``tau=1``, both weights 1, ``loss_weight=2`` (MMRazor's
    R-34 -> R-18 config); segmentation (official code) ``tau=1``, both weights 1, weight 1 on
    the decode head's logits and 0.4 on the auxiliary head's.

    Args:
        inter_loss_weight: ``beta``, weight of the inter-class relation (>= 0). Defaults to 1.
        intra_loss_weight: ``gamma``, weight of the intra-class relation (>= 0). Defaults to 1.
        tau: Temperature (> 0). Defaults to 1.0.
        loss_weight: Weight of the loss (> 0). Defaults to 1.0.
    """

    def __init__(self, inter_loss_weight: float = 1.0, intra_loss_weight: float = 1.0,
                 tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        fix = 'the weight of this relation, >= 0 (1 in the paper)'
        self.inter_loss_weight = check_non_negative(self, 'inter_loss_weight',
                                                    inter_loss_weight, fix=fix)
        self.intra_loss_weight = check_non_negative(self, 'intra_loss_weight',
                                                    intra_loss_weight, fix=fix)
        if inter_loss_weight == 0 and intra_loss_weight == 0:
            raise ConfigError('DISTLoss: inter_loss_weight and intra_loss_weight are both 0, '
                              'so the loss is always 0. Fix: give one of them a value > 0 '
                              '(both 1 in the paper), or remove the loss.')
        self.tau = check_positive(self, 'tau', tau, fix=TAU_FIX)
        self.loss_weight = check_loss_weight(self, loss_weight)

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Student logits, shape (B, K) or (B, K, H, W).
            teacher: Teacher logits, the same shape.

        Returns:
            Tensor: Scalar loss, float32.

        Raises:
            ShapeMismatchError: The shapes differ.
        """
        if student.shape != teacher.shape:
            raise ShapeMismatchError(
                f'DISTLoss: the student logits have shape {tuple(student.shape)} and the '
                f"teacher's {tuple(teacher.shape)}; DIST compares the predictions of the same "
                'classes for the same samples. Tap the classifiers of both models (same number '
                'of classes); for dense logits of another size add '
                "student_connector=dict(type='ResizeConnector', mode='bilinear').")
        y_student = F.softmax(logits_as_rows(student) / self.tau, dim=1)
        y_teacher = F.softmax(logits_as_rows(teacher.detach()) / self.tau, dim=1)
        loss = 0.0
        if self.inter_loss_weight:
            loss = loss + self.inter_loss_weight * inter_class_relation(y_student, y_teacher)
        if self.intra_loss_weight:
            loss = loss + self.intra_loss_weight * intra_class_relation(y_student, y_teacher)
        return self.loss_weight * self.tau**2 * loss
