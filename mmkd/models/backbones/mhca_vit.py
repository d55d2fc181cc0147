"""DearKD's vision transformer: multi-head convolutional attention (MHCA) in the first blocks.

DearKD (Chen et al., CVPR 2022) replaces the self-attention of a DeiT's first ``K`` blocks by
MHCA: self-attention whose logits get, per head, a term that depends only on the relative
position of query and key. With Cordonnier et al.'s quadratic encoding (ICLR 2020)

    logit_h(q, k) = <W_q x_q, W_k x_k> / sqrt(d_h) + v_h . r(k - q),
    r(d) = (|d|^2, d_row, d_col),

a head with ``v_h = -alpha (1, -2 D_row, -2 D_col)`` puts the weight
``softmax(-alpha |d - D|^2)`` on the key at offset ``d`` from the query: as ``alpha`` grows it
attends to the single patch at offset ``D`` — one tap of a convolution kernel. ``K x K`` such
heads reproduce a ``K x K`` convolution, so MHCA blocks can learn (and, initialised locally,
start from) convolution-like locality while keeping content-based attention.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vision_transformer import (TransformerEncoderLayer,
                                                            VisionTransformer)
from mmpretrain.models.utils import MultiheadAttention, resize_pos_embed

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ShapeMismatchError


def relative_quadratic_encoding(hw_shape: Tuple[int, int],
                                device: Optional[torch.device] = None) -> torch.Tensor:
    """Cordonnier et al.'s quadratic relative position encoding of a patch grid.

    Args:
        hw_shape: The patch grid (h, w).
        device: Device of the result.

    Returns:
        Tensor: Shape (h * w, h * w, 3); entry ``[q, k]`` is ``(|d|^2, d_row, d_col)`` with
        ``d`` the position of key ``k`` minus that of query ``q`` (row-major order).
    """
    rows, cols = torch.meshgrid(torch.arange(hw_shape[0], device=device),
                                torch.arange(hw_shape[1], device=device), indexing='ij')
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()  # (N, 2)
    delta = coords[None, :, :] - coords[:, None, :]  # (N_q, N_k, 2)
    return torch.cat([delta.pow(2).sum(-1, keepdim=True), delta], dim=-1)


def local_kernel_offsets(num_heads: int, distance: float = 1.0) -> torch.Tensor:
    """The offsets of a centred ``k x k`` kernel (``k = floor(sqrt(num_heads))``), one per head.

    Heads beyond ``k * k`` cycle through the kernel again.

    Returns:
        Tensor: Shape (num_heads, 2), offsets (row, col) in patches.
    """
    kernel = max(int(math.isqrt(num_heads)), 1)
    center = (kernel - 1) / 2
    grid = [((r - center) * distance, (c - center) * distance)
            for r in range(kernel) for c in range(kernel)]
    return torch.tensor([grid[h % len(grid)] for h in range(num_heads)])


class MultiHeadConvAttention(MultiheadAttention):
    """Multi-head convolutional attention: mmpretrain's ``MultiheadAttention`` plus a learnable
    per-head relative position term (Cordonnier et al.'s quadratic encoding).

    Patch-to-patch logits get ``v_h . r(k - q)``; logits towards the leading class /
    distillation tokens, which have no grid position, get a learnable per-head bias instead
    (``extra_token_bias``, 0 at init).

    Args:
        embed_dims: Token dimension.
        num_heads: Number of heads.
        locality_strength: ``alpha`` of the local initialisation (0 starts from pure content
            attention). Defaults to 1.0, ConViT's value.
        locality_distance: Spacing of the initial kernel offsets, in patches. Defaults to 1.
        **kwargs: Other arguments of :class:`mmpretrain.models.utils.MultiheadAttention`
            (``attn_drop``, ``proj_drop``, ``dropout_layer``, ``qkv_bias``,
            ``layer_scale_init_value``...).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 locality_strength: float = 1.0,
                 locality_distance: float = 1.0,
                 **kwargs) -> None:
        if 'qk_scale' in kwargs or kwargs.get('v_shortcut'):
            raise ConfigError('MultiHeadConvAttention: qk_scale and v_shortcut are not '
                              'supported; remove them from the layer config.')
        super().__init__(embed_dims, num_heads, **kwargs)
        if embed_dims % num_heads:
            raise ConfigError(f'MultiHeadConvAttention: embed_dims={embed_dims} is not '
                              f'divisible by num_heads={num_heads}.')
        self.locality_strength = locality_strength
        self.locality_distance = locality_distance
        #: ``v_h`` of every head, shape (num_heads, 3).
        self.position_weights = nn.Parameter(torch.zeros(num_heads, 3))
        #: Logit bias towards class/distillation tokens, shape (num_heads, ).
        self.extra_token_bias = nn.Parameter(torch.zeros(num_heads))
        self._encodings: Dict[tuple, torch.Tensor] = {}
        self.reset_position_parameters()

    @torch.no_grad()
    def set_kernel_offsets(self, offsets: torch.Tensor, strength: float) -> None:
        """Set ``v_h = -strength (1, -2 D_row, -2 D_col)``: head ``h`` attends around the patch
        at offset ``D = offsets[h]`` (exactly there as ``strength`` grows).

        Args:
            offsets: Shape (num_heads, 2), offsets (row, col) in patches.
            strength: ``alpha``.
        """
        offsets = offsets.to(self.position_weights)
        self.position_weights.copy_(-strength * torch.cat(
            [torch.ones_like(offsets[:, :1]), -2 * offsets], dim=1))

    def reset_position_parameters(self) -> None:
        """Local initialisation: head ``h`` centred on one offset of a small kernel."""
        self.set_kernel_offsets(local_kernel_offsets(self.num_heads, self.locality_distance),
                                self.locality_strength)
        nn.init.zeros_(self.extra_token_bias)

    def init_weights(self) -> None:
        super().init_weights()
        self.reset_position_parameters()

    def _encoding(self, hw_shape: Tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (tuple(hw_shape), str(device))
        if key not in self._encodings:
            self._encodings[key] = relative_quadratic_encoding(hw_shape, device)
        return self._encodings[key]

    def position_logits(self, hw_shape: Tuple[int, int], num_extra_tokens: int) -> torch.Tensor:
        """The position part of the attention logits.

        Args:
            hw_shape: Patch grid (h, w).
            num_extra_tokens: Leading class/distillation tokens.

        Returns:
            Tensor: Shape (num_heads, N, N) with ``N = num_extra_tokens + h * w``.
        """
        encoding = self._encoding(hw_shape, self.position_weights.device)
        patch_logits = torch.einsum('qkc,hc->hqk', encoding.to(self.position_weights.dtype),
                                    self.position_weights)
        if num_extra_tokens == 0:
            return patch_logits
        num_patches = patch_logits.shape[-1]
        total = num_extra_tokens + num_patches
        logits = self.extra_token_bias[:, None, None].expand(-1, total, num_extra_tokens)
        rows_of_extra_queries = patch_logits.new_zeros(self.num_heads, num_extra_tokens,
                                                       num_patches)
        patch_columns = torch.cat([rows_of_extra_queries, patch_logits], dim=1)
        return torch.cat([logits, patch_columns], dim=2)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int],
                num_extra_tokens: int = 0) -> torch.Tensor:
        """Args:
            x: Tokens, shape (B, N, C), ``N = num_extra_tokens + h * w`` (row-major patches).
            hw_shape: Patch grid (h, w).
            num_extra_tokens: Leading class/distillation tokens.

        Returns:
            Tensor: Shape (B, N, C).
        """
        batch, length, _ = x.shape
        if length != num_extra_tokens + hw_shape[0] * hw_shape[1]:
            raise ShapeMismatchError(f'MultiHeadConvAttention: {length} tokens, but '
                                     f'{num_extra_tokens} extra tokens and a {hw_shape} patch '
                                     'grid were given.')
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        bias = self.position_logits(hw_shape, num_extra_tokens).to(qkv.dtype)
        attn_drop = self.attn_drop if self.training else 0.
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias[None],
                                           dropout_p=attn_drop)
        x = self.proj(x.transpose(1, 2).reshape(batch, length, self.embed_dims))
        return self.out_drop(self.gamma1(self.proj_drop(x)))


class MHCATransformerEncoderLayer(TransformerEncoderLayer):
    """mmpretrain's ViT encoder layer with :class:`MultiHeadConvAttention`.

    Args:
        locality_strength: See :class:`MultiHeadConvAttention`.
        locality_distance: See :class:`MultiHeadConvAttention`.
        **kwargs: Arguments of mmpretrain's ``TransformerEncoderLayer``.
    """

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int,
                 locality_strength: float = 1.0, locality_distance: float = 1.0,
                 layer_scale_init_value: float = 0., drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0., qkv_bias: bool = True,
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, feedforward_channels,
                         layer_scale_init_value=layer_scale_init_value, drop_rate=drop_rate,
                         attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
                         qkv_bias=qkv_bias, **kwargs)
        self.attn = MultiHeadConvAttention(
            embed_dims, num_heads, locality_strength=locality_strength,
            locality_distance=locality_distance, attn_drop=attn_drop_rate, proj_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate), qkv_bias=qkv_bias,
            layer_scale_init_value=layer_scale_init_value)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int],
                num_extra_tokens: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), hw_shape, num_extra_tokens)
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class MHCAVisionTransformer(VisionTransformer):
    """DearKD's ViT: a DeiT whose first ``num_mhca_layers`` blocks use multi-head
    convolutional attention; the remaining blocks are plain MHSA.

    Built on mmpretrain's :class:`VisionTransformer` (patch embedding, absolute position
    embedding, ``out_indices``/``out_type``, ``init_cfg``, ``frozen_stages`` and position
    embedding resizing when loading a checkpoint of another resolution), with DeiT's
    distillation token as an option (``with_dist_token``, parameter ``dist_token`` as in
    :class:`DistilledVisionTransformer`, so DeiT checkpoints load).

    Use it in an mmpretrain ``ImageClassifier`` as ``type='mmkd.MHCAVisionTransformer'``.

    Args:
        arch: ``'tiny'``/``'small'``/``'base'`` (DearKD-Ti/S/B: DeiT widths with 12/12/16
            heads, 12 blocks of which 8 are MHCA) or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads``, ``feedforward_channels`` and optionally
            ``num_mhca_layers``.
        num_mhca_layers: ``K``, overriding the arch's. 0 gives a plain ViT/DeiT.
        with_dist_token: Add DeiT's distillation token after the class token. With
            ``out_type='cls_token'`` each output is then the pair (class token, distillation
            token), each (B, C), as :class:`DearKDClsHead`/``DeiTClsHead`` expect.
        locality_strength: ``alpha`` of the MHCA local initialisation.
        locality_distance: Spacing of the initial kernel offsets, in patches.
        mhca_attn_drop_rate: Attention dropout of the MHCA blocks; ``None`` uses
            ``attn_drop_rate``.
        attn_drop_rate: Attention dropout of every block (mmpretrain's ViT has none).
        **kwargs: Arguments of mmpretrain's :class:`VisionTransformer` (``img_size``,
            ``patch_size``, ``out_indices``, ``out_type``, ``drop_path_rate``, ``init_cfg``...).
    """

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny', 'dearkd-t', 'dearkd-tiny'], {
            'embed_dims': 192, 'num_layers': 12, 'num_heads': 12,
            'feedforward_channels': 192 * 4, 'num_mhca_layers': 8}),
        **dict.fromkeys(['s', 'small', 'dearkd-s', 'dearkd-small'], {
            'embed_dims': 384, 'num_layers': 12, 'num_heads': 12,
            'feedforward_channels': 384 * 4, 'num_mhca_layers': 8}),
        **dict.fromkeys(['b', 'base', 'dearkd-b', 'dearkd-base'], {
            'embed_dims': 768, 'num_layers': 12, 'num_heads': 16,
            'feedforward_channels': 768 * 4, 'num_mhca_layers': 8}),
    }

    def __init__(self,
                 arch='tiny',
                 num_mhca_layers: Optional[int] = None,
                 with_dist_token: bool = True,
                 locality_strength: float = 1.0,
                 locality_distance: float = 1.0,
                 mhca_attn_drop_rate: Optional[float] = None,
                 attn_drop_rate: float = 0.,
                 out_type: str = 'cls_token',
                 **kwargs) -> None:
        with_cls_token = kwargs.get('with_cls_token', True)
        if with_dist_token and not with_cls_token:
            raise ConfigError('MHCAVisionTransformer: with_dist_token=True needs the class '
                              'token (with_cls_token=True).')
        if with_dist_token:
            self.num_extra_tokens = 2  # read by VisionTransformer to size pos_embed
        kwargs['layer_cfgs'] = self._with_attn_drop(kwargs.get('layer_cfgs', {}),
                                                    attn_drop_rate)
        super().__init__(arch=arch, out_type=out_type, **kwargs)
        self.with_dist_token = with_dist_token
        if with_dist_token:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.num_mhca_layers = self._check_num_mhca_layers(num_mhca_layers)
        self._build_mhca_layers(
            kwargs, dict(locality_strength=locality_strength,
                         locality_distance=locality_distance,
                         attn_drop_rate=attn_drop_rate if mhca_attn_drop_rate is None
                         else mhca_attn_drop_rate))
        if self.frozen_stages > 0:
            self._freeze_stages()

    @staticmethod
    def _with_attn_drop(layer_cfgs, attn_drop_rate: float):
        if isinstance(layer_cfgs, dict):
            return dict(dict(attn_drop_rate=attn_drop_rate), **layer_cfgs)
        return [dict(dict(attn_drop_rate=attn_drop_rate), **cfg) for cfg in layer_cfgs]

    def _check_num_mhca_layers(self, num_mhca_layers: Optional[int]) -> int:
        if num_mhca_layers is None:
            num_mhca_layers = self.arch_settings.get('num_mhca_layers')
        if num_mhca_layers is None:
            raise ConfigError('MHCAVisionTransformer: give num_mhca_layers (or the arch dict '
                              'key "num_mhca_layers").')
        if not 0 <= num_mhca_layers <= self.num_layers:
            raise ConfigError(f'MHCAVisionTransformer: num_mhca_layers={num_mhca_layers} must '
                              f'be in [0, num_layers={self.num_layers}].')
        return num_mhca_layers

    def _build_mhca_layers(self, kwargs: dict, mhca_cfg: dict) -> None:
        """Replace the first ``num_mhca_layers`` encoder layers by MHCA layers built with the
        same settings (those of ``VisionTransformer.__init__``)."""
        layer_cfgs = kwargs['layer_cfgs']
        if isinstance(layer_cfgs, dict):
            layer_cfgs = [layer_cfgs] * self.num_layers
        drop_path = np.linspace(0, kwargs.get('drop_path_rate', 0.), self.num_layers)
        for i in range(self.num_mhca_layers):
            cfg = dict(
                embed_dims=self.embed_dims,
                num_heads=self.arch_settings['num_heads'],
                feedforward_channels=self.arch_settings['feedforward_channels'],
                layer_scale_init_value=kwargs.get('layer_scale_init_value', 0.),
                drop_rate=kwargs.get('drop_rate', 0.),
                drop_path_rate=drop_path[i],
                qkv_bias=kwargs.get('qkv_bias', True),
                norm_cfg=kwargs.get('norm_cfg', dict(type='LN', eps=1e-6)))
            cfg.update(layer_cfgs[i])
            cfg.update(mhca_cfg)
            self.layers[i] = MHCATransformerEncoderLayer(**cfg)

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and self.init_cfg['type'] == 'Pretrained'
        if self.with_dist_token and not pretrained:
            trunc_normal_(self.dist_token, std=0.02)

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if getattr(self, 'with_dist_token', False):
            self.dist_token.requires_grad = False

    def _extra_tokens(self, batch: int) -> Sequence[torch.Tensor]:
        tokens = [] if self.cls_token is None else [self.cls_token.expand(batch, -1, -1)]
        if self.with_dist_token:
            tokens.append(self.dist_token.expand(batch, -1, -1))
        return tokens

    def forward(self, x: torch.Tensor) -> tuple:
        """Args:
            x: Images, shape (B, C, H, W).

        Returns:
            tuple: One output per ``out_indices`` entry, formatted by ``out_type``
            (``'cls_token'`` with a distillation token: a pair of (B, C) tensors).
        """
        x, hw_shape = self.patch_embed(x)
        x = torch.cat([*self._extra_tokens(x.shape[0]), x], dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, hw_shape,
                                 mode=self.interpolate_mode,
                                 num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))
        outs = []
        for i, layer in enumerate(self.layers):
            if i < self.num_mhca_layers:
                x = layer(x, hw_shape, self.num_extra_tokens)
            else:
                x = layer(x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw_shape))
        return tuple(outs)

    def _format_output(self, x: torch.Tensor, hw):
        if self.out_type == 'cls_token' and self.with_dist_token:
            return x[:, 0], x[:, 1]
        return super()._format_output(x, hw)

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """As :meth:`VisionTransformer.get_layer_depth`; the distillation token is at depth 0
        like the class token (for layer-wise learning-rate decay)."""
        if param_name == prefix + 'dist_token':
            return 0, self.num_layers + 2
        return super().get_layer_depth(param_name, prefix)
