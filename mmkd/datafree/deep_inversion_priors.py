"""The image-synthesis terms of DeepInversion (Yin et al., CVPR 2020), used by DF-DearKD.

DeepInversion optimises input images so that a trained teacher classifies them as chosen
classes while the statistics of every BatchNorm input match the layer's running statistics,
under two image priors (total variation and L2). The definitions follow DeepInversion's
reference implementation (the TV and BN terms are norms, not squared norms). All terms are
computed in float32, also on half-precision images and features (under autocast).
"""
from typing import Any, List, Optional

import torch
import torch.nn as nn

from mmkd.utils.errors import ConfigError
from mmkd.models.losses.precision import float32_reduction
from mmkd.models.losses.validation import check_non_negative


@float32_reduction
def total_variation(images: torch.Tensor) -> torch.Tensor:
    """DeepInversion's TV prior: the sum, over the horizontal, vertical and both diagonal
    neighbour differences, of the L2 norm of the difference tensor of the whole batch.

    Args:
        images: Shape (B, C, H, W).

    Returns:
        Tensor: Scalar.
    """
    differences = (
        images[:, :, :, 1:] - images[:, :, :, :-1],
        images[:, :, 1:, :] - images[:, :, :-1, :],
        images[:, :, 1:, 1:] - images[:, :, :-1, :-1],
        images[:, :, 1:, :-1] - images[:, :, :-1, 1:],
    )
    return sum(torch.linalg.vector_norm(d) for d in differences)


@float32_reduction
def l2_prior(images: torch.Tensor) -> torch.Tensor:
    """DeepInversion's L2 prior: the mean over the batch of each image's L2 norm.

    Args:
        images: Shape (B, C, H, W).

    Returns:
        Tensor: Scalar.
    """
    return torch.linalg.vector_norm(images.flatten(1), dim=1).mean()


@float32_reduction
def bn_statistics_term(feature: torch.Tensor, running_mean: torch.Tensor,
                       running_var: torch.Tensor) -> torch.Tensor:
    """One BN layer's DeepInversion term ``||mu(x) - running_mean||_2 + ||var(x) -
    running_var||_2``, with the per-channel mean and biased variance over the batch and the
    spatial positions.

    Args:
        feature: The BN layer's input, shape (B, C, ...).
        running_mean: Shape (C, ).
        running_var: Shape (C, ).

    Returns:
        Tensor: Scalar, float32.
    """
    dims = [d for d in range(feature.dim()) if d != 1]
    mean = feature.mean(dim=dims)
    var = feature.var(dim=dims, unbiased=False)
    return (torch.linalg.vector_norm(mean - running_mean) +
            torch.linalg.vector_norm(var - running_var))


class BNStatisticsLoss:
    """DeepInversion's feature-statistics term: for every BatchNorm layer ``l`` of a model,
    ``||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2``, where ``mu_l`` and
    ``var_l`` are the per-channel mean and (biased) variance of the layer's input over the
    batch and spatial positions; summed over layers, the first layer weighted by
    ``first_layer_weight``.

    Forward hooks on the BN layers compute each layer's term during the model's forward pass;
    :meth:`loss` returns their sum for the last pass. Use as a context manager (or call
    :meth:`remove`) so the hooks do not outlive the synthesis.

    Args:
        model: The teacher (in eval mode, so BN uses its running statistics).
        first_layer_weight: Weight of the first BN layer (>= 0). Defaults to 10
            (DeepInversion's reference implementation; 1 gives the plain sum).
    """

    def __init__(self, model: nn.Module, first_layer_weight: float = 10.0) -> None:
        check_non_negative(self, 'first_layer_weight', first_layer_weight,
                           fix="the first BN layer's weight, e.g. 10 (1 for the plain sum)")
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not layers:
            raise ConfigError(f'BNStatisticsLoss: {type(model).__name__} has no BatchNorm '
                              'layer; DeepInversion needs a teacher with BN statistics. Fix: '
                              'use a teacher with BatchNorm layers.')
        for layer in layers:
            if not layer.track_running_stats or layer.running_mean is None:
                raise ConfigError(f'BNStatisticsLoss: {layer} keeps no running statistics. '
                                  'Fix: use a teacher whose BN layers track running statistics.')
        self.weights = [first_layer_weight] + [1.0] * (len(layers) - 1)
        self._terms: List[Optional[torch.Tensor]] = [None] * len(layers)
        self._handles = [layer.register_forward_hook(self._hook(i))
                         for i, layer in enumerate(layers)]

    def _hook(self, index: int):

        def hook(module: nn.modules.batchnorm._BatchNorm, args: tuple, output: Any) -> None:
            self._terms[index] = bn_statistics_term(args[0], module.running_mean,
                                                    module.running_var)

        return hook

    def loss(self) -> torch.Tensor:
        """The weighted sum of the BN terms of the last forward pass (a scalar)."""
        missing = [i for i, term in enumerate(self._terms) if term is None]
        if missing:
            raise RuntimeError(f'BNStatisticsLoss: BN layers {missing} did not run in the last '
                               'forward pass.')
        total = sum(w * t for w, t in zip(self.weights, self._terms))
        self._terms = [None] * len(self._terms)
        return total

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> 'BNStatisticsLoss':
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()
