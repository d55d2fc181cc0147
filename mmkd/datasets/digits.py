"""scikit-learn's handwritten digits as an mmpretrain dataset (no download needed)."""
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.datasets import BaseDataset

from mmkd.registry import DATASETS
from mmkd.utils.errors import ConfigError

SPLITS = ('train', 'val')


def split_indices(labels: np.ndarray, val_fraction: float, seed: int):
    """Stratified train/val split: the same ``val_fraction`` of every class goes to val.

    Returns:
        tuple: (train indices, val indices), each sorted.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = int(round(len(members) * val_fraction))
        val.extend(members[:num_val])
        train.extend(members[num_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def few_shot_indices(indices: np.ndarray, labels: np.ndarray, shots_per_class: int,
                     seed: int) -> np.ndarray:
    """Keep ``shots_per_class`` of ``indices`` per class, chosen with ``seed``."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels[indices]):
        members = indices[labels[indices] == label]
        if len(members) < shots_per_class:
            raise ConfigError(f'class {label} has {len(members)} images, fewer than '
                              f'shots_per_class={shots_per_class}; lower shots_per_class.')
        kept.extend(rng.choice(members, shots_per_class, replace=False))
    return np.sort(np.array(kept))


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """8x8 images with values 0..16 -> (N, size, size, 3) uint8, bilinear."""
    tensor = torch.from_numpy(images.astype(np.float32) * (255.0 / 16.0))[:, None]
    tensor = F.interpolate(tensor, size=(size, size), mode='bilinear', align_corners=False)
    tensor = tensor.clamp(0, 255).round().to(torch.uint8)
    return tensor.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """The 1,797 8x8 handwritten digits that ship inside scikit-learn, for mmpretrain.

    The split is stratified and fixed by ``split_seed``; ``shots_per_class`` keeps a few images
    per class of the chosen split (few-shot students). Images are upscaled to ``image_size``
    and given three identical channels, as ``img`` (H, W, 3) uint8 with ``gt_label`` and
    ``digits_index`` (the index in scikit-learn's ``load_digits()``), so
    mmpretrain's pipelines (``PackInputs``, ``RandomCrop``...) and ``Accuracy`` work unchanged.

    Args:
        split: ``'train'`` or ``'val'``.
        val_fraction: Fraction of each class held out for val. Defaults to 0.2.
        split_seed: Seed of the train/val split. Defaults to 0.
        shots_per_class: Keep this many images per class; ``None`` keeps all.
        shots_seed: Seed of the few-shot choice. Defaults to 0.
        image_size: Side of the upscaled images. Defaults to 32.
        pipeline: mmpretrain transforms.
        test_mode: As in :class:`mmpretrain.datasets.BaseDataset`.
    """

    METAINFO = {'classes': tuple(str(d) for d in range(10))}

    def __init__(self,
                 split: str = 'train',
                 val_fraction: float = 0.2,
                 split_seed: int = 0,
                 shots_per_class: Optional[int] = None,
                 shots_seed: int = 0,
                 image_size: int = 32,
                 pipeline=(),
                 test_mode: bool = False,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ConfigError(f'DigitsDataset: split must be one of {SPLITS}, got {split!r}.')
        if not 0 < val_fraction < 1:
            raise ConfigError(f'DigitsDataset: val_fraction must be in (0, 1), got '
                              f'{val_fraction}.')
        self.split = split
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.shots_per_class = shots_per_class
        self.shots_seed = shots_seed
        self.image_size = image_size
        super().__init__(ann_file='', pipeline=pipeline, test_mode=test_mode, **kwargs)

    def load_data_list(self) -> List[dict]:
        from sklearn.datasets import load_digits
        digits = load_digits()
        labels = digits.target.astype(np.int64)
        train, val = split_indices(labels, self.val_fraction, self.split_seed)
        indices = train if self.split == 'train' else val
        if self.shots_per_class is not None:
            indices = few_shot_indices(indices, labels, self.shots_per_class, self.shots_seed)
        images = upscale(digits.images[indices], self.image_size)
        # ``digits_index``: the image's index in ``load_digits()`` (mmengine overwrites
        # ``sample_idx`` with the position in this dataset).
        return [dict(img=image, gt_label=int(labels[i]), digits_index=int(i))
                for image, i in zip(images, indices)]
