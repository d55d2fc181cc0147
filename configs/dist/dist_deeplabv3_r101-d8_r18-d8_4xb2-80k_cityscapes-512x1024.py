# DIST for segmentation: DeepLabV3 R-101-D8 (mmseg model zoo) -> DeepLabV3 R-18-D8, with the
# decode-head tap, loss and stock 80k Cityscapes schedule of the PSPNet config (the official
# DIST result for this pair, 74.21 -> 77.10 mIoU, is in CIRKD's setting: 40k iterations,
# batch 16, lr 0.02; see README.md).
_base_ = ['./dist_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    architecture=dict(cfg_path='mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher=dict(cfg_path='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py'))
