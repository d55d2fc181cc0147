"""The data samples a model's ``tensor`` mode needs when it runs on a bare image batch (the
build-time dry run, ``tools/list_taps.py``)."""
from typing import Any, List, Optional

import torch
import torch.nn as nn


def _data_sample_type(model: nn.Module) -> Optional[type]:
    """The data sample class of an mmdet detector or an mmseg segmentor, else ``None``."""
    packages = {cls.__module__.split('.', 1)[0] for cls in type(model).__mro__}
    if 'mmdet' in packages:
        from mmdet.structures import DetDataSample
        return DetDataSample
    if 'mmseg' in packages:
        from mmseg.structures import SegDataSample
        return SegDataSample
    return None


def dummy_data_samples(model: nn.Module, inputs: torch.Tensor) -> Optional[List[Any]]:
    """The data samples a detector or a segmentor receives with ``inputs`` in a real run.

    Two-stage detectors need them in ``tensor`` mode: the RPN reads each image's size
    (``img_shape``) before it runs and turns its outputs into the proposals the RoI head pools.
    Each sample carries the metainfo that the test pipeline and the data preprocessor give an
    image of the input's size that is neither resized nor padded; no annotations.

    Args:
        model: The model (a detector or segmentor of its package, or any other module).
        inputs: The batch, shape (B, C, H, W).

    Returns:
        list or None: ``B`` ``DetDataSample``/``SegDataSample`` with image metainfo; ``None``
        for other models (classifiers take none in ``tensor`` mode).
    """
    sample_type = _data_sample_type(model)
    if sample_type is None:
        return None
    size = tuple(inputs.shape[-2:])
    metainfo = dict(img_shape=size, ori_shape=size, pad_shape=size, batch_input_shape=size,
                    scale_factor=(1.0, 1.0))
    return [sample_type(metainfo=metainfo) for _ in range(inputs.shape[0])]
