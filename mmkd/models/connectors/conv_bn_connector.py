from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch.utils.checkpoint import checkpoint

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError
from .base_connector import BaseConnector


def check_recomputable(norm: nn.Module) -> None:
    """Refuse a synchronised BatchNorm for ``recompute=True`` (torch's or mmcv's, also one
    that mmengine's ``sync_bn`` swapped in after building): its recomputation would gather the
    statistics again, and a local recomputation would differentiate other statistics than the
    forward used."""
    if isinstance(norm, nn.SyncBatchNorm) or type(norm).__name__ in SYNC_NORM_NAMES:
        raise ConfigError(f'ConvBNConnector: recompute=True does not support a synchronised '
                          f'BatchNorm ({type(norm).__name__}; mmengine\'s sync_bn converts BN '
                          "layers to one). Fix: norm_cfg=dict(type='BN') without sync_bn, or "
                          'recompute=False.')


#: Class names of synchronised BatchNorm layers outside torch: mmcv's (registered as
#: ``MMSyncBN``, its class is ``mmcv.ops.SyncBatchNorm``).
SYNC_NORM_NAMES = ('SyncBatchNorm', )


@MODELS.register_module()
class ConvBNConnector(BaseConnector):
    """Student transform of OFD and FitNets: ``k x k`` conv + norm layer.

    Maps a student feature (B, C_s, H, W) to the teacher's channels (B, C_t, H, W). Both channel
    counts are filled from the dry run when left out of the config. The conv has a bias only
    without a norm layer (``norm_cfg=None``): a norm layer's shift makes one redundant. Weights
    are initialised as OFD's official code does: He (``fan_out``) for the conv, bias 0, BN
    weight 1 and bias 0.

    With ``recompute=True`` the connector keeps only its input for the backward pass and
    computes the conv again there (activation checkpointing of conv + norm): the conv output,
    (B, C_t, H, W), which the norm layer would otherwise keep until the backward pass, is not
    held, at the price of one more conv forward in the backward pass. Values and gradients are
    the same; a BatchNorm in training mode updates its running statistics once (the backward
    pass normalises with the batch's own statistics, as the forward did). For large feature
    maps (detection at stride 4), where this activation is the largest one the method adds.

    Args:
        in_channels: Student channels ``C_s``.
        out_channels: Teacher channels ``C_t``.
        kernel_size: Conv kernel size (odd; padding keeps the size). Defaults to 1.
        norm_cfg: Norm layer config; ``None`` for none (the conv then has a bias). Defaults to
            ``dict(type='BN')``.
        recompute: Recompute the conv in the backward pass instead of keeping its output (see
            above). Not with SyncBN (its statistics would be gathered again). Defaults to False.
    """

    def __init__(self,
                 in_channels: Optional[int] = None,
                 out_channels: Optional[int] = None,
                 kernel_size: int = 1,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 recompute: bool = False,
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
        if recompute:
            check_recomputable(self.norm)
        self.recompute = bool(recompute)
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
        if self.recompute and torch.is_grad_enabled():
            check_recomputable(self.norm)
            first_call = [True]

            def conv_norm(x: torch.Tensor) -> torch.Tensor:
                # The forward pass runs the norm layer itself (its running statistics are
                # updated once); the recomputation in the backward pass gives the same values
                # from the batch statistics without touching them.
                rerun, first_call[0] = not first_call[0], False
                return self._norm_again(self.conv(x)) if rerun else self.norm(self.conv(x))
            return checkpoint(conv_norm, feature, use_reentrant=False)
        return self.norm(self.conv(feature))

    def _norm_again(self, conv_out: torch.Tensor) -> torch.Tensor:
        """The norm layer's output again, without updating a BatchNorm's running statistics
        (copies of them are updated and dropped, so that the recomputation saves the same
        tensors for the backward pass as the forward did)."""
        norm = self.norm
        if not (isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.training
                and norm.track_running_stats):
            return norm(conv_out)
        return F.batch_norm(conv_out, norm.running_mean.clone(), norm.running_var.clone(),
                            norm.weight, norm.bias, training=True, momentum=0.0, eps=norm.eps)
