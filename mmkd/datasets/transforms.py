"""Data transforms mmpretrain lacks: a random affine warp of the whole image (DF-DearKD's
augmentation of synthetic images)."""
from typing import Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from mmkd.registry import TRANSFORMS
from mmkd.utils.errors import ConfigError


@TRANSFORMS.register_module()
class RandomAffine(BaseTransform):
    """Rotate, scale and shift ``img`` by amounts drawn uniformly per image, around its centre
    (classification images only: no boxes or masks; mmdet's ``RandomAffine`` is the detection
    one).

    The warp is ``cv2.warpAffine`` with bilinear interpolation; uncovered pixels get
    ``border_value``. Random numbers come from numpy's global generator, which mmengine seeds
    from ``randomness.seed`` (and per dataloader worker).

    Args:
        max_rotate_degree: Rotation drawn from ``[-max, max]`` degrees. Defaults to 14.
        scale_range: Zoom factor drawn from ``[low, high]``. Defaults to (0.85, 1.15).
        max_translate_ratio: Shift drawn from ``[-r, r]`` times the width (x) and the height
            (y), independently. Defaults to 0.1.
        border_value: Value of the pixels the warp leaves uncovered. Defaults to 0.
        prob: Probability of warping an image. Defaults to 1.

    Examples:
        >>> transform = RandomAffine(max_rotate_degree=14, scale_range=(0.85, 1.15),
        ...                          max_translate_ratio=0.1)
        >>> transform(dict(img=np.zeros((32, 32, 3), np.uint8)))['img'].shape
        (32, 32, 3)
    """

    def __init__(self,
                 max_rotate_degree: float = 14.0,
                 scale_range: Sequence[float] = (0.85, 1.15),
                 max_translate_ratio: float = 0.1,
                 border_value: float = 0,
                 prob: float = 1.0) -> None:
        low, high = scale_range
        if max_rotate_degree < 0 or not 0 < low <= high or max_translate_ratio < 0:
            raise ConfigError(
                f'RandomAffine: got max_rotate_degree={max_rotate_degree}, scale_range='
                f'{tuple(scale_range)}, max_translate_ratio={max_translate_ratio}. Fix: give '
                'max_rotate_degree >= 0, 0 < scale_range[0] <= scale_range[1] and '
                'max_translate_ratio >= 0, e.g. 14, (0.85, 1.15), 0.1.')
        if not 0 <= prob <= 1:
            raise ConfigError(f'RandomAffine: prob must be in [0, 1], got {prob}.')
        self.max_rotate_degree = max_rotate_degree
        self.scale_range = (float(low), float(high))
        self.max_translate_ratio = max_translate_ratio
        self.border_value = border_value
        self.prob = prob

    def matrix(self, height: int, width: int) -> np.ndarray:
        """A random 2 x 3 affine matrix for an image of ``height`` x ``width``."""
        angle = np.random.uniform(-self.max_rotate_degree, self.max_rotate_degree)
        scale = np.random.uniform(*self.scale_range)
        shift = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio, 2)
        centre: Tuple[float, float] = ((width - 1) / 2, (height - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        matrix[:, 2] += shift * (width, height)
        return matrix

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img']
        height, width = img.shape[:2]
        channels = 1 if img.ndim == 2 else img.shape[2]
        results['img'] = cv2.warpAffine(
            img, self.matrix(height, width), (width, height), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(self.border_value, ) * channels)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_rotate_degree={self.max_rotate_degree}, '
                f'scale_range={self.scale_range}, '
                f'max_translate_ratio={self.max_translate_ratio}, '
                f'border_value={self.border_value}, prob={self.prob})')
