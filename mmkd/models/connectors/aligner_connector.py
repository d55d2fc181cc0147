"""DearKD's aligner: ViT tokens -> a map shaped like a CNN teacher's intermediate feature."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError
from .base_connector import BaseConnector
from .generic_connectors import ResizeConnector, tokens_to_map


@MODELS.register_module()
class AlignerConnector(BaseConnector):
    """DearKD's aligner (Chen et al., CVPR 2022), a student connector.

    Student tokens ``H_S`` (B, L, D) -> patch map (B, D, h, w) (the leading class /
    distillation tokens dropped) -> depthwise ``k x k`` conv -> LayerNorm over channels ->
    ReLU -> 1x1 conv to the teacher's channels ``C`` -> resize to the teacher map's size.
    The result (B, C, H_T, W_T) is compared with the CNN teacher's map ``H_T`` by a feature
    loss (e.g. ``FitNetsLoss``, the mean squared error).

    The paper names the depthwise conv, LayerNorm and ReLU; the 1x1 projection and the resize
    are what makes the shapes meet when the widths or grids differ.

    ``in_channels``, ``out_channels`` and ``out_size`` are filled from the distiller's dry run
    when left out.

    Args:
        in_channels: Token dimension ``D``.
        out_channels: Teacher channels ``C``.
        out_size: Teacher map size (H_T, W_T).
        num_extra_tokens: Leading tokens to drop: 1 (class token) or 2 (class and
            distillation tokens). Defaults to 2.
        hw_shape: Patch grid (h, w); square when ``None``.
        kernel_size: Depthwise kernel size (odd). Defaults to 3.
        resize_mode: ``'bilinear'``, ``'nearest'`` or ``'pool'`` (adaptive average pooling,
            for shrinking), see :class:`ResizeConnector`. Defaults to ``'bilinear'``.
    """

    shape_args = ('in_channels', 'out_channels', 'out_size')

    def __init__(self,
                 in_channels: Optional[int] = None,
                 out_channels: Optional[int] = None,
                 out_size: Optional[Sequence[int]] = None,
                 num_extra_tokens: int = 2,
                 hw_shape: Optional[Sequence[int]] = None,
                 kernel_size: int = 3,
                 resize_mode: str = 'bilinear',
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if in_channels is None or out_channels is None or out_size is None:
            raise ConfigError('AlignerConnector needs in_channels, out_channels and out_size; '
                             'inside a distiller they are filled from the dry run when left '
                             'out.')
        if kernel_size % 2 != 1:
            raise ConfigError(f'AlignerConnector: kernel_size must be odd, got {kernel_size}.')
        self.num_extra_tokens = num_extra_tokens
        self.hw_shape = tuple(hw_shape) if hw_shape is not None else None
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size,
                                   padding=kernel_size // 2, groups=in_channels)
        self.norm = nn.LayerNorm(in_channels)
        self.projection = nn.Conv2d(in_channels, out_channels, 1)
        self.resize = ResizeConnector(size=out_size, mode=resize_mode)

    @classmethod
    def complete_cfg(cls, cfg: dict, feature_shape: Sequence[int],
                     target_shape: Optional[Sequence[int]]) -> dict:
        """Fill ``in_channels`` from the tokens (B, L, D) and ``out_channels``/``out_size``
        from the teacher map (B, C, H, W)."""
        cfg = dict(cfg)
        if len(feature_shape) != 3:
            raise ShapeMismatchError(f'AlignerConnector takes ViT tokens (B, L, D), got a '
                                     f'feature of shape {tuple(feature_shape)}; tap a '
                                     'transformer layer on its side.')
        if cfg.get('in_channels') is None:
            cfg['in_channels'] = feature_shape[-1]
        if target_shape is not None and len(target_shape) == 4:
            if cfg.get('out_channels') is None:
                cfg['out_channels'] = target_shape[1]
            if cfg.get('out_size') is None:
                cfg['out_size'] = tuple(target_shape[2:])
        return cfg

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Args:
            feature: Tokens, shape (B, L, D) with ``L = num_extra_tokens + h * w``.

        Returns:
            Tensor: Shape (B, C, *out_size).
        """
        x = self.depthwise(tokens_to_map(feature, self.num_extra_tokens, self.hw_shape))
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.resize(self.projection(F.relu(x)))
