# DIST for segmentation: PSPNet R-101-D8 (mmseg model zoo) -> PSPNet R-18-D8 (ImageNet-initialised
# ResNetV1c backbone), stock 80k Cityscapes schedule. DISTLoss on the decode heads' logits
# (`decode_head.conv_seg`, (B, 19, H/8, W/8)): every pixel is a sample, the inter-class relation
# correlates the 19 class probabilities of each pixel, the intra-class relation each class over
# all pixels of the batch. tau = 1, both relations and the loss weight 1, next to the stock
# decode + 0.4 auxiliary cross-entropy: the official code's setting. The official code also
# distils the auxiliary head (weight 0.4); the teacher here runs only up to its decode head's
# classifier (its auxiliary head never runs), so that term is left out.
# The pair, weights and schedule are the pixel-wise KD config's; only the distillation term
# differs.
_base_ = ['../kd/kd_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distiller=dict(
        tap_pairs=[dict(name='dist', student='decode_head.conv_seg',
                        loss=dict(type='DISTLoss', inter_loss_weight=1.0,
                                  intra_loss_weight=1.0, tau=1.0, loss_weight=1.0))]))
