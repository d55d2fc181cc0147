"""DF-DearKD's boundary-preserving intra-divergence term, a synthesis objective: it acts on the
teacher's embeddings of the images being synthesised, not on a student (so it is no
distillation loss and is not registered; :class:`DeepInversionSynthesizer` builds it)."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.models.losses.precision import float32_reduction
from mmkd.models.losses.validation import check_non_negative


def intra_divergence_terms(embeddings: torch.Tensor, labels: torch.Tensor,
                           margin: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the boundary-preserving intra-divergence loss.

    Distances are Euclidean between L2-normalised embeddings. For each anchor ``i`` with at
    least one other sample of its class (positives) and one of another class (negatives):
    the easy positive is its nearest positive, the hard positive its farthest positive and the
    hard negative its nearest negative.

    - intra-divergence: ``-mean_i d(i, easy positive)``, pushing each anchor away from its
      nearest same-class sample (diversity inside a class);
    - boundary preservation: ``mean_i max(0, d(i, hard pos.) - d(i, hard neg.) + margin)``,
      a triplet loss that keeps every class inside its boundary.

    Args:
        embeddings: Teacher embeddings of the images, shape (B, C).
        labels: Target classes, shape (B, ).
        margin: Triplet margin.

    Returns:
        tuple: (intra-divergence term, triplet term), scalars; zero when no anchor qualifies.
    """
    z = F.normalize(embeddings.flatten(1), dim=1)
    # |a - b|^2 = 2 - 2 a.b for unit vectors; clamped so that sqrt has a gradient at 0.
    distances = (2 - 2 * z @ z.t()).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    anchors = positive.any(dim=1) & negative.any(dim=1)
    if not anchors.any():
        zero = embeddings.sum() * 0
        return zero, zero
    inf = torch.finfo(distances.dtype).max
    easy_positive = distances.masked_fill(~positive, inf).min(dim=1).values
    hard_positive = distances.masked_fill(~positive, -inf).max(dim=1).values
    hard_negative = distances.masked_fill(~negative, inf).min(dim=1).values
    divergence = -easy_positive[anchors].mean()
    triplet = F.relu(hard_positive - hard_negative + margin)[anchors].mean()
    return divergence, triplet


class IntraDivergenceLoss(nn.Module):
    """DF-DearKD's boundary-preserving intra-divergence loss (Chen et al., CVPR 2022):
    ``ep_weight * (-d(anchor, easy positive)) + triplet_weight * max(0, d(anchor, hard
    positive) - d(anchor, hard negative) + margin)``, see :func:`intra_divergence_terms`.

    Added to DeepInversion's objective so that images synthesised for one class spread out
    (against mode collapse) without crossing into other classes.

    Computed in float32 on half-precision embeddings. Both weights at 0 switch the loss off
    (plain DeepInversion, as :class:`~mmkd.datafree.DeepInversionSynthesizer` allows).

    Args:
        ep_weight: Weight of the easy-positive (intra-divergence) term (>= 0). Defaults to 50.
        triplet_weight: Weight of the triplet (boundary) term (>= 0). Defaults to 0.5.
        margin: Triplet margin (>= 0), in distances between unit embeddings (0..2). Defaults
            to 0.2.
    """

    def __init__(self, ep_weight: float = 50.0, triplet_weight: float = 0.5,
                 margin: float = 0.2) -> None:
        super().__init__()
        self.ep_weight = check_non_negative(
            self, 'ep_weight', ep_weight,
            fix='the weight of the intra-divergence term, e.g. 50 (0 switches it off)')
        self.triplet_weight = check_non_negative(
            self, 'triplet_weight', triplet_weight,
            fix='the weight of the triplet term, e.g. 0.5 (0 switches it off)')
        self.margin = check_non_negative(
            self, 'margin', margin, fix='the triplet margin between unit embeddings, e.g. 0.2')

    @float32_reduction
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args:
            embeddings: Shape (B, C) (or (B, ...), flattened).
            labels: Shape (B, ).

        Returns:
            Tensor: Scalar loss, float32.
        """
        divergence, triplet = intra_divergence_terms(embeddings, labels, self.margin)
        return self.ep_weight * divergence + self.triplet_weight * triplet
