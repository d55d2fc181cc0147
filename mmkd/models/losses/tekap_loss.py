"""TeKAP: teacher knowledge augmentation, one teacher seen from several perspectives
("Single Teacher, Multiple Perspectives", ICLR 2025)."""
import torch
import torch.nn as nn

from mmkd.registry import MODELS, build_component
from mmkd.utils.errors import ConfigError
from .kd_loss import TAU_FIX, kl_divergence_with_temperature
from .precision import float32_reduction
from .squared_error import squared_error_sum_over_targets
from .validation import (check_choice, check_count, check_loss_weight, check_non_negative,
                         check_number, check_positive)


def perturbed_views(teacher: torch.Tensor, num_views: int, noise_weight: float,
                    noise_std: float = 1.0) -> torch.Tensor:
    """``num_views`` augmented copies ``(1 - a) * teacher + a * noise_std * eps_i`` of a teacher
    output, ``eps_i ~ N(0, 1)``.

    The noise is drawn with one ``torch.randn`` call of shape ``(num_views, *teacher.shape)``
    from the default generator of the teacher's device, in its dtype: fresh at every call and
    reproducible under ``torch.manual_seed`` (which mmengine's ``randomness.seed`` sets).

    Args:
        teacher: Any shape, e.g. logits (B, K) or a feature map (B, C, H, W).
        num_views: ``N``.
        noise_weight: Mixing weight ``a`` of the noise.
        noise_std: Standard deviation of the noise before mixing.

    Returns:
        Tensor: Shape (N, *teacher.shape).
    """
    noise = torch.randn((num_views, *teacher.shape), device=teacher.device, dtype=teacher.dtype)
    return (1 - noise_weight) * teacher.unsqueeze(0) + (noise_weight * noise_std) * noise


def total_weight(num_views: int, view_weight: float) -> float:
    """``1 + N * lambda``: the weight of the clean term plus the ``N`` views'."""
    return 1 + num_views * view_weight


def _check_views(owner: nn.Module, num_views: int, noise_weight: float, noise_std: float,
                 view_weight: float) -> None:
    """Check the perturbation hyper-parameters shared by both TeKAP losses."""
    check_count(owner, 'num_views', num_views, 0,
                fix='the number of perturbed teachers, e.g. 3 (0 for plain distillation)')
    check_number(owner, 'noise_weight', noise_weight, low=0, high=1,
                 fix='the mixing weight of the noise, e.g. 0.1')
    check_non_negative(owner, 'noise_std', noise_std,
                       fix='the standard deviation of the noise, e.g. 0.1 for features')
    check_non_negative(owner, 'view_weight', view_weight,
                       fix='the weight of each perturbed view, e.g. 0.8')
    if num_views > 0 and view_weight == 0:
        raise ConfigError(
            f'{type(owner).__name__}: view_weight=0 with num_views={num_views} computes '
            f'{num_views} perturbed views at every step and discards them. Fix: set '
            'num_views=0 for plain distillation, or give view_weight a value > 0 (e.g. 0.8).')


@MODELS.register_module()
class TeKAPLoss(nn.Module):
    """Logit-level TeKAP: KD from the teacher's logits and from ``N`` noisy views of them.

    ``loss_weight * mean_b [KL_T(z_t, z_s) + lambda * sum_i KL_T(z_i, z_s)]`` with
    ``z_i = (1 - a) z_t + a eps_i``, ``eps_i ~ N(0, 1)`` drawn fresh at every step (see
    :func:`perturbed_views`) and ``KL_T(z, z_s) = KL(softmax(z / T) || softmax(z_s / T)) T^2``.
    With ``num_views=0`` it is exactly :class:`KDLoss`. Defaults are the official code's.
    Computed in float32 on half-precision inputs.

    Args:
        tau: Temperature ``T`` (> 0). Defaults to 4.
        num_views: Number of perturbed teachers ``N`` (an integer >= 0). Defaults to 3.
        noise_weight: Mixing weight ``a``, in [0, 1]. Defaults to 0.1.
        view_weight: Weight ``lambda`` of each perturbed view (>= 0; > 0 when ``N > 0``).
            Defaults to 0.8.
        loss_weight: Weight of the whole loss (> 0). Defaults to 1.0.
        normalize: Divide by ``1 + N * lambda``, so that ``loss_weight`` is the total weight of
            the teacher terms, as for :class:`KDLoss` (the official sum weighs them
            ``1 + N * lambda`` = 3.4 times more with the defaults). Defaults to False.
    """

    def __init__(self, tau: float = 4.0, num_views: int = 3, noise_weight: float = 0.1,
                 view_weight: float = 0.8, loss_weight: float = 1.0,
                 normalize: bool = False) -> None:
        super().__init__()
        self.tau = check_positive(self, 'tau', tau, fix=TAU_FIX)
        _check_views(self, num_views, noise_weight, 1.0, view_weight)
        self.num_views = num_views
        self.noise_weight = noise_weight
        self.view_weight = view_weight
        self.loss_weight = check_loss_weight(self, loss_weight)
        self.normalize = check_choice(self, 'normalize', normalize, (True, False))

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Student logits, shape (B, K) or (B, K, ...) (per pixel, as KDLoss).
            teacher: Teacher logits, the same shape.

        Returns:
            Tensor: Scalar loss, float32.
        """
        teacher = teacher.detach()
        per_sample = kl_divergence_with_temperature(student, teacher, self.tau)
        if self.num_views > 0:
            views = perturbed_views(teacher, self.num_views, self.noise_weight)  # (N, B, K)
            students = student.unsqueeze(0).expand_as(views)
            view_terms = kl_divergence_with_temperature(
                students.flatten(0, 1), views.flatten(0, 1),
                self.tau).view(self.num_views, *per_sample.shape)
            per_sample = per_sample + self.view_weight * view_terms.sum(dim=0)
        loss = self.loss_weight * per_sample.mean()
        return loss / total_weight(self.num_views, self.view_weight) if self.normalize else loss


@MODELS.register_module()
class TeKAPFeatureLoss(nn.Module):
    """Feature-level TeKAP: a feature loss applied to the teacher's feature and to ``N`` noisy
    views of it.

    ``L(s, f_t) + lambda * sum_i L(s, (1 - a) f_t + a * sigma * eps_i)``, ``eps_i ~ N(0, 1)``
    fresh at every step, where ``L`` is any loss with ``forward(student, teacher)`` (e.g.
    ``FitNetsLoss``, ``OFDLoss``): it wraps that loss, so TeKAP composes with the method in use.
    The views are made from the teacher's feature as the wrapped loss receives it (after the
    teacher's connectors, e.g. OFD's margin ReLU). The official code's noise scale for features
    is ``sigma = 0.1`` (``a * sigma = 0.01`` in absolute units of the feature). The views and
    the wrapped loss are computed in float32 on half-precision inputs. A squared-error loss
    (``OFDLoss``, ``FitNetsLoss``) is summed over the clean feature and the views in one
    autograd function that keeps one tensor for the backward pass, not one per view.

    Args:
        loss: Config of the wrapped feature loss (its ``loss_weight`` scales every term).
        num_views: Number of perturbed teachers ``N`` (an integer >= 0). Defaults to 3.
        noise_weight: Mixing weight ``a``, in [0, 1]. Defaults to 0.1.
        noise_std: ``sigma``, the noise's standard deviation before mixing (>= 0). Defaults
            to 0.1.
        view_weight: Weight ``lambda`` of each perturbed view (>= 0; > 0 when ``N > 0``).
            Defaults to 0.8.
        normalize: Divide by ``1 + N * lambda``, so that the wrapped loss's ``loss_weight`` is
            the total weight of the teacher terms. Defaults to False (the official sum).
    """

    def __init__(self, loss: dict, num_views: int = 3, noise_weight: float = 0.1,
                 noise_std: float = 0.1, view_weight: float = 0.8,
                 normalize: bool = False) -> None:
        super().__init__()
        _check_views(self, num_views, noise_weight, noise_std, view_weight)
        self.loss = build_component(MODELS, loss) if isinstance(loss, dict) else loss
        self.num_views = num_views
        self.noise_weight = noise_weight
        self.noise_std = noise_std
        self.view_weight = view_weight
        self.normalize = check_choice(self, 'normalize', normalize, (True, False))

    @property
    def compares_shapes(self) -> bool:
        """The wrapped loss's answer (see the distiller's dry-run shape check)."""
        return getattr(self.loss, 'compares_shapes', True)

    @float32_reduction
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Args:
            student: Student feature (after its connectors), e.g. shape (B, C, H, W).
            teacher: Teacher feature, the shape the wrapped loss expects.

        Returns:
            Tensor: Scalar loss, float32.
        """
        teacher = teacher.detach()
        if self.num_views == 0:
            loss = self.loss(student, teacher)
        else:
            views = perturbed_views(teacher, self.num_views, self.noise_weight, self.noise_std)
            loss = self._loss_over_views(student, teacher, views)
        return loss / total_weight(self.num_views, self.view_weight) if self.normalize else loss

    def _loss_over_views(self, student: torch.Tensor, teacher: torch.Tensor,
                         views: torch.Tensor) -> torch.Tensor:
        """``L(s, f_t) + lambda * sum_i L(s, view_i)``. A squared-error loss (OFD's, FitNets';
        ``squared_error_terms``) is summed over the clean feature and the views in one
        autograd function that keeps one tensor for the backward pass instead of one per
        view (same value and gradient)."""
        terms = getattr(self.loss, 'squared_error_terms', None)
        if terms is None:
            return self.loss(student, teacher) + self.view_weight * sum(
                self.loss(student, view) for view in views)
        scale, partial = terms(student)
        scales = [scale] + [self.view_weight * scale] * len(views)
        return squared_error_sum_over_targets(student, [teacher, *views], scales, partial)
