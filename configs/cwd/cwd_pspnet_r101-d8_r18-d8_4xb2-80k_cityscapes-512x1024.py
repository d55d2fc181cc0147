# CWD for segmentation: PSPNet R-101-D8 (mmseg model zoo) -> PSPNet R-18-D8 (ImageNet-initialised
# ResNetV1c backbone), stock 80k Cityscapes schedule. Channel-wise distillation of the decode
# heads' logits (`decode_head.conv_seg`, (B, 19, H/8, W/8) in both models): each class channel
# becomes a distribution over the positions. tau = 1, weight 5, next to the stock decode + 0.4
# auxiliary cross-entropy: MMRazor's setting for this pair (74.87 -> 75.54 mIoU). The official
# code's segmentation recipe is tau = 4, weight 3 (`--cfg-options
# model.distiller.tap_pairs.0.loss.tau=4 model.distiller.tap_pairs.0.loss.loss_weight=3`).
# The teacher runs up to its decode head's classifier (its auxiliary head never runs).
# The pair, weights and schedule are the pixel-wise KD config's; only the distillation term
# differs.
_base_ = ['../kd/kd_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distiller=dict(
        tap_pairs=[dict(name='cwd_logits', student='decode_head.conv_seg',
                        loss=dict(type='CWDLoss', tau=1.0, loss_weight=5.0))]))
