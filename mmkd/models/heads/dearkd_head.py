"""DeiT's two-token classifier head, made trainable (for DearKD and DeiT-style distillation)."""
from typing import List, Tuple

import torch
from mmpretrain.models.heads import DeiTClsHead
from mmpretrain.structures import DataSample

from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigError, ConfigTypeError

DIST_TARGETS = ('teacher', 'label')


@MODELS.register_module()
class DearKDClsHead(DeiTClsHead):
    """mmpretrain's :class:`DeiTClsHead` that trains the distillation token.

    Two linear classifiers, ``layers.head`` on the class token and ``layers.head_dist`` on the
    distillation token; inference (``forward``/``predict``) averages their logits as DeiT
    does. In training the head's own loss is

    - ``loss_cls``: the classification loss of the class-token logits against the labels;
    - ``loss_dist`` (only when ``dist_target='label'``): the same loss of the
      distillation-token logits against the labels.

    With ``dist_target='teacher'`` the distillation token is left to a distillation loss:
    record ``head.layers.head_dist`` (``ModuleOutputs``) and compare it with the teacher's
    logits, e.g. with :class:`DearKDLogitLoss` (DeiT's hard-label distillation). The
    :class:`DearKD` algorithm sets ``dist_target`` to ``'teacher'`` while distillation is on
    and back to ``'label'`` when ``DistillSwitchHook`` turns it off.

    The default loss weight 0.5 gives DeiT's ``1/2 CE(cls, y) + 1/2 CE(dist, .)``.

    Args:
        num_classes: Number of classes.
        in_channels: Token dimension.
        dist_target: ``'label'`` or ``'teacher'``, see above. Defaults to ``'label'``.
        loss: Classification loss config (mmpretrain scope). Defaults to cross-entropy with
            ``loss_weight=0.5``.
        **kwargs: Other arguments of ``DeiTClsHead`` (``hidden_dim``, ``topk``, ``cal_acc``,
            ``init_cfg``...).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 dist_target: str = 'label',
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=0.5),
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, loss=loss, **kwargs)
        self.dist_target = dist_target

    @property
    def dist_target(self) -> str:
        return self._dist_target

    @dist_target.setter
    def dist_target(self, value: str) -> None:
        if value not in DIST_TARGETS:
            raise ConfigError(f'DearKDClsHead: dist_target must be one of {DIST_TARGETS}, '
                              f'got {value!r}.')
        self._dist_target = value

    def pre_logits(self, feats: Tuple) -> Tuple[torch.Tensor, torch.Tensor]:
        feat = feats[-1]
        if not (isinstance(feat, (tuple, list)) and len(feat) in (2, 3)):
            raise ConfigTypeError('DearKDClsHead expects the backbone output (class token, '
                                  'distillation token): use a backbone with a distillation '
                                  "token and out_type='cls_token' (e.g. MHCAVisionTransformer "
                                  'with with_dist_token=True).')
        return super().pre_logits(feats)

    def two_token_logits(self, feats: Tuple) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits of both tokens.

        Args:
            feats: Backbone outputs; the last is (class token, distillation token), each
                (B, C).

        Returns:
            tuple: Class-token logits and distillation-token logits, each (B, num_classes).
        """
        cls_token, dist_token = self.pre_logits(feats)
        return self.layers.head(cls_token), self.layers.head_dist(dist_token)

    def forward(self, feats: Tuple) -> torch.Tensor:
        """Inference logits: the mean of both tokens' logits, shape (B, num_classes)."""
        cls_score, dist_score = self.two_token_logits(feats)
        return (cls_score + dist_score) / 2

    def loss(self, feats: Tuple, data_samples: List[DataSample], **kwargs) -> dict:
        """Args:
            feats: Backbone outputs, see :meth:`two_token_logits`.
            data_samples: With ``gt_label`` (or ``gt_score`` after batch augmentations).

        Returns:
            dict: ``loss_cls``, ``loss_dist`` (with ``dist_target='label'``) and the
            training accuracy of the class token when ``cal_acc``.
        """
        cls_score, dist_score = self.two_token_logits(feats)
        cls_losses = self._get_loss(cls_score, data_samples, **kwargs)
        losses = dict(loss_cls=cls_losses.pop('loss'), **cls_losses)
        if self.dist_target == 'label':
            losses['loss_dist'] = self._get_loss(dist_score, data_samples, **kwargs)['loss']
        return losses
