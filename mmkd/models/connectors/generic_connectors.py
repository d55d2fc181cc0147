"""Connectors that change a feature's form without learning anything."""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError
from .base_connector import BaseConnector


@MODELS.register_module()
class IdentityConnector(BaseConnector):
    """Passes the feature through unchanged."""

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return feature


@MODELS.register_module()
class ResizeConnector(BaseConnector):
    """Resizes a feature map (B, C, H, W) to a spatial size (the target's when ``size`` is left
    out). A feature already of that size passes unchanged.

    Args:
        size: Output (H, W). Filled from the compared feature in the dry run when ``None``.
        mode: ``'pool'`` (default): :func:`torch.nn.functional.adaptive_avg_pool2d`, in either
            direction (shrinking averages, growing repeats values like ``'nearest'`` with
            integer factors). Any other value is the ``mode`` of
            :func:`torch.nn.functional.interpolate` for 4-D inputs (``'nearest'``,
            ``'bilinear'``, ``'bicubic'``, ``'area'``, ``'nearest-exact'``), with
            ``align_corners=False`` for ``'bilinear'`` and ``'bicubic'``; it is not checked
            before the first forward.
    """

    shape_args = ('size', )

    def __init__(self, size: Optional[Sequence[int]] = None, mode: str = 'pool',
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if size is None:
            raise ConfigError('ResizeConnector needs `size`; inside a distiller it is filled from '
                             'the compared feature when left out.')
        self.size = tuple(size)
        self.mode = mode

    @classmethod
    def complete_cfg(cls, cfg, feature_shape, target_shape):
        cfg = dict(cfg)
        if cfg.get('size') is None and target_shape is not None:
            cfg['size'] = tuple(target_shape[2:])
        return cfg

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Args:
            feature: Shape (B, C, H, W).

        Returns:
            Tensor: Shape (B, C, *size).
        """
        if tuple(feature.shape[2:]) == self.size:
            return feature
        if self.mode == 'pool':
            return F.adaptive_avg_pool2d(feature, self.size)
        align = False if self.mode in ('bilinear', 'bicubic') else None
        return F.interpolate(feature, size=self.size, mode=self.mode, align_corners=align)


def tokens_to_map(tokens: torch.Tensor, num_extra_tokens: int,
                  hw_shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Turn ViT tokens into a feature map, dropping the leading class/distillation tokens.

    Args:
        tokens: Shape (B, L, D) with ``L = num_extra_tokens + h * w``.
        num_extra_tokens: Leading tokens to drop (1 for a class token, 2 with a
            distillation token).
        hw_shape: (h, w) of the patch grid; a square grid is assumed when ``None``.

    Returns:
        Tensor: Shape (B, D, h, w).
    """
    batch, length, dim = tokens.shape
    patches = tokens[:, num_extra_tokens:]
    if hw_shape is None:
        side = math.isqrt(length - num_extra_tokens)
        if side * side != length - num_extra_tokens:
            raise ShapeMismatchError(f'{length - num_extra_tokens} patch tokens do not form a '
                                     'square grid; pass hw_shape=(h, w) to the connector.')
        hw_shape = (side, side)
    return patches.transpose(1, 2).reshape(batch, dim, *hw_shape)


def map_to_tokens(feature: torch.Tensor) -> torch.Tensor:
    """Flatten a feature map (B, C, H, W) into tokens (B, H * W, C)."""
    return feature.flatten(2).transpose(1, 2)


@MODELS.register_module()
class TokensToMapConnector(BaseConnector):
    """ViT tokens (B, L, D) -> feature map (B, D, h, w), dropping the extra tokens.

    Args:
        num_extra_tokens: Leading class/distillation tokens to drop. Defaults to 1.
        hw_shape: Patch grid (h, w); square when ``None``.
    """

    shape_args = ()

    def __init__(self, num_extra_tokens: int = 1,
                 hw_shape: Optional[Sequence[int]] = None, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.num_extra_tokens = num_extra_tokens
        self.hw_shape = tuple(hw_shape) if hw_shape is not None else None

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return tokens_to_map(feature, self.num_extra_tokens, self.hw_shape)


@MODELS.register_module()
class MapToTokensConnector(BaseConnector):
    """Feature map (B, C, H, W) -> tokens (B, H * W, C)."""

    shape_args = ()

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return map_to_tokens(feature)
