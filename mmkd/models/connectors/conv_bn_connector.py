from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError
from .base_connector import BaseConnector


@MODELS.register_module()
class ConvBNConnector(BaseConnector):
    """Student transform of OFD and FitNets: ``k x k`` conv + norm layer.

    Maps a student feature (B, C_s, H, W) to the teacher's channels (B, C_t, H, W). Both channel
    counts are filled from the dry run when left out of the config. The conv has a bias only
    without a norm layer (``norm_cfg=None``): a norm layer's shift makes one redundant. Weights
    are initialised as OFD's official code does: He (``fan_out``) for the conv, bias 0, BN
    weight 1 and bias 0.

    Args:
        in_channels: Student channels ``C_s``.
        out_channels: Teacher channels ``C_t``.
        kernel_size: Conv kernel size (odd; padding keeps the size). Defaults to 1.
        norm_cfg: Norm layer config; ``None`` for none (the conv then has a bias). Defaults to
            ``dict(type='BN')``.
    """

    def __init__(self,
                 in_channels: Optional[int] = None,
                 out_channels: Optional[int] = None,
                 kernel_size: int = 1,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if in_channels is None or out_channels is None:
            raise ConfigError('ConvBNConnector needs in_channels and out_channels; inside a '
                             'distiller they are filled from the dry run when left out.')
        if kernel_size % 2 != 1:
            raise ConfigError(f'ConvBNConnector: kernel_size must be odd, got {kernel_size}.')
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size,
                              padding=kernel_size // 2, bias=norm_cfg is None)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1] if norm_cfg else nn.Identity()
        self._init_like_ofd()

    def _init_like_ofd(self) -> None:
        # OFD's official code: He init (fan_out) for the conv, BN weight 1 and bias 0.
        nn.init.kaiming_normal_(self.conv.weight, mode='fan_out', nonlinearity='relu')
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Args:
            feature: Shape (B, C_s, H, W).

        Returns:
            Tensor: Shape (B, C_t, H, W).
        """
        return self.norm(self.conv(feature))
