"""A dataset of images synthesised from a teacher (DF-DearKD's training set)."""
import os.path as osp
from typing import List, Optional, Union

import torch
import torch.nn as nn
from mmengine.dist import barrier, get_rank, get_world_size
from mmengine.logging import print_log
from mmpretrain.datasets import BaseDataset

from mmkd.models.algorithms.teacher import load_teacher_checkpoint
from mmkd.models.builder import build_model_from_cfg
from mmkd.registry import DATASETS, TASK_UTILS, build_component
from mmkd.utils.checkpoint import atomic_save
from mmkd.utils.errors import ConfigError
from .fingerprint import (converts_channels, fingerprint_differences, synthesis_fingerprint,
                          teacher_weights_hash)
from .progress import SynthesisProgress


def to_pixels(images: torch.Tensor, data_preprocessor: nn.Module) -> torch.Tensor:
    """Undo a classifier's input normalisation: normalised (B, 3, H, W) -> uint8 images
    (B, H, W, 3) in the channel order the data pipeline loads (BGR when the preprocessor
    converts to RGB).

    Args:
        images: Normalised images, shape (B, 3, H, W).
        data_preprocessor: The teacher's ``ClsDataPreprocessor`` (``mean``, ``std``).
    """
    mean = getattr(data_preprocessor, 'mean', None)
    std = getattr(data_preprocessor, 'std', None)
    if mean is not None:
        images = images * std.to(images) + mean.to(images)
    if converts_channels(data_preprocessor):
        images = images.flip(1)
    return images.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 500
                   ) -> torch.Tensor:
    """The teacher's logits on stored images, as the data pipeline loads them unaugmented.

    Args:
        teacher: The loaded classifier, in evaluation mode.
        images: uint8 images (N, H, W, 3), in the pipeline's channel order.
        batch_size: Images per forward pass.

    Returns:
        Tensor: Logits (N, num_classes), float32, on the CPU.
    """
    device = next(teacher.parameters()).device
    logits = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].permute(0, 3, 1, 2).to(device)
        inputs = teacher.data_preprocessor(dict(inputs=batch), False)['inputs']
        logits.append(teacher(inputs, mode='tensor').float().cpu())
    return torch.cat(logits)


@DATASETS.register_module()
class DeepInversionDataset(BaseDataset):
    """Labelled images synthesised from a trained teacher with
    :class:`DeepInversionSynthesizer` (DF-DearKD: distil without any real image).

    The images are synthesised when the dataset is built, ``num_per_class`` per class in
    batches of ``batch_size`` images (classes spread evenly over every batch, so the
    intra-divergence term sees several images per class), and saved to ``cache_file`` with a
    fingerprint: the hash of the teacher's weights, the synthesizer's settings, the number
    of images, the batch size and the seed. A later build loads the cache when its
    fingerprint is the same, and synthesises again (overwriting it) when anything differs.
    A progress bar shows images/s and the time left. In distributed runs rank 0
    synthesises and the other ranks wait and load the cache. Items are ``img`` (H, W, 3)
    uint8 and ``gt_label`` (the class the image was synthesised for), so mmpretrain's
    pipelines, augmentations and the student's data preprocessor work unchanged.

    With ``soft_label_tau`` set, items also carry ``gt_score``: the teacher's softened
    prediction ``softmax(z_t / tau)`` on the stored (unaugmented) image, computed once and
    kept in the cache with the images. A classification head then trains on these soft
    labels instead of the synthesis labels (mmpretrain's heads use ``gt_score`` when present;
    give the head ``CrossEntropyLoss(use_soft=True)``). They are what the teacher says about
    the image, and what a label-only stage of training (e.g. DearKD's stage 2) can learn from
    without the teacher running: on synthetic images the synthesis labels alone teach features
    that do not carry over to real images (docs/methods/dearkd.md, DF-DearKD).

    Args:
        teacher: The teacher's model config (``dict(cfg_path=...)``, a scoped type) or module.
        num_per_class: Images per class.
        synthesizer: Config of :class:`DeepInversionSynthesizer`.
        teacher_ckpt: The teacher's checkpoint (required unless ``teacher`` is a module or
            built pretrained).
        num_classes: Classes to synthesise; defaults to the teacher head's ``num_classes``.
        batch_size: Images optimised together. Defaults to 100.
        cache_file: Where the synthesised images are saved and looked up; ``None`` keeps
            them in memory only (and needs ``world_size == 1``).
        seed: Seed of the initial noise and the augmentations.
        soft_label_tau: Temperature of the teacher's soft labels (``gt_score``, > 0);
            ``None`` (default) for the synthesis labels only.
        device: Device of the synthesis; defaults to CUDA when available.
        pipeline: mmpretrain transforms.
        test_mode: As in :class:`mmpretrain.datasets.BaseDataset`.
    """

    def __init__(self,
                 teacher: Union[dict, nn.Module],
                 num_per_class: int,
                 synthesizer: dict,
                 teacher_ckpt: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 batch_size: int = 100,
                 cache_file: Optional[str] = None,
                 seed: int = 0,
                 soft_label_tau: Optional[float] = None,
                 device: Optional[str] = None,
                 pipeline=(),
                 test_mode: bool = False,
                 **kwargs) -> None:
        if num_per_class <= 0 or batch_size <= 0:
            raise ConfigError('DeepInversionDataset: num_per_class and batch_size must be '
                             f'positive, got {num_per_class} and {batch_size}.')
        if soft_label_tau is not None and not soft_label_tau > 0:
            raise ConfigError('DeepInversionDataset: soft_label_tau must be positive (the '
                              f'temperature of the teacher\'s soft labels), got '
                              f'{soft_label_tau!r}. Fix: e.g. soft_label_tau=4, or None for '
                              'the synthesis labels.')
        if cache_file is None and get_world_size() > 1:
            raise ConfigError('DeepInversionDataset: give cache_file in distributed runs, so '
                             'that every rank trains on the images rank 0 synthesises.')
        self.teacher_cfg = teacher
        self.teacher_ckpt = teacher_ckpt
        self.num_per_class = num_per_class
        self.synthesizer_cfg = synthesizer
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.cache_file = cache_file
        self.seed = seed
        self.soft_label_tau = soft_label_tau
        self.device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        super().__init__(ann_file='', pipeline=pipeline, test_mode=test_mode, **kwargs)

    # -- synthesis -----------------------------------------------------------------------
    def _build_teacher(self) -> nn.Module:
        teacher = build_model_from_cfg(self.teacher_cfg, 'teacher')
        if self.teacher_ckpt is not None:
            load_teacher_checkpoint(teacher, self.teacher_ckpt)
        elif isinstance(self.teacher_cfg, dict) and not self.teacher_cfg.get('pretrained'):
            raise ConfigError('DeepInversionDataset: the teacher has no weights; set '
                             'teacher_ckpt=<path to the trained teacher>.')
        return teacher.to(self.device).eval()

    def _labels(self, num_classes: int) -> torch.Tensor:
        """Class of every image, interleaved so each batch holds every class (and every prefix
        of ``k * num_classes`` images is balanced)."""
        return torch.arange(num_classes).repeat(self.num_per_class)

    def _num_classes(self, teacher: nn.Module) -> int:
        num_classes = self.num_classes or getattr(getattr(teacher, 'head', None),
                                                  'num_classes', None)
        if num_classes is None:
            raise ConfigError('DeepInversionDataset: give num_classes (the teacher head has '
                              'no num_classes).')
        return num_classes

    def fingerprint(self, teacher: nn.Module) -> dict:
        """What the images depend on (see :func:`synthesis_fingerprint`)."""
        return synthesis_fingerprint(teacher_weights_hash(teacher), self.synthesizer_cfg,
                                     self._num_classes(teacher), self.num_per_class,
                                     self.batch_size, self.seed)

    def synthesize(self, teacher: Optional[nn.Module] = None) -> dict:
        """Synthesise every image (see the class docstring), with a progress bar.

        Args:
            teacher: The loaded teacher; built from the config when ``None``.

        Returns:
            dict: ``images`` (N, H, W, 3) uint8, ``labels`` (N, ) int64, ``teacher_logits``
            (N, num_classes) float32 (the teacher on the stored images) and ``fingerprint``.
        """
        teacher = teacher if teacher is not None else self._build_teacher()
        synthesizer = build_component(TASK_UTILS, self.synthesizer_cfg)
        generator = torch.Generator().manual_seed(self.seed)
        labels = self._labels(self._num_classes(teacher))
        images = []
        with SynthesisProgress(len(labels), synthesizer.num_steps) as progress:
            for start in range(0, len(labels), self.batch_size):
                batch = labels[start:start + self.batch_size]
                normalised = synthesizer.synthesize(
                    teacher, batch, generator, on_step=lambda n=len(batch): progress.step(n))
                images.append(to_pixels(normalised, teacher.data_preprocessor).cpu())
                progress.batch_done(start + len(batch))
        images = torch.cat(images)
        return dict(images=images, labels=labels, teacher_logits=teacher_logits(teacher, images),
                    fingerprint=self.fingerprint(teacher))

    def _read_cache(self, wanted: dict) -> Optional[dict]:
        """The cached set when ``cache_file`` exists and its fingerprint is ``wanted``."""
        if self.cache_file is None or not osp.isfile(self.cache_file):
            return None
        data = torch.load(self.cache_file, map_location='cpu', weights_only=True)
        differences = fingerprint_differences(data.get('fingerprint', {}), wanted)
        if differences:
            print_log(f'DeepInversionDataset: {self.cache_file} was synthesised with another '
                      f'{", ".join(differences)}; synthesising again.', logger='current')
            return None
        print_log(f'DeepInversionDataset: {len(data["labels"])} synthetic images from '
                  f'{self.cache_file} (same teacher, synthesizer and number of images).',
                  logger='current')
        return data

    def _load_or_synthesize(self) -> dict:
        data = None
        if get_rank() == 0:
            teacher = self._build_teacher()
            data = self._read_cache(self.fingerprint(teacher))
            if data is None:
                data = self.synthesize(teacher)
                if self.cache_file is not None:
                    atomic_save(data, self.cache_file)
            elif 'teacher_logits' not in data:  # a cache written before they were kept
                data['teacher_logits'] = teacher_logits(teacher, data['images'])
                atomic_save(data, self.cache_file)
        barrier()
        if get_rank() != 0:
            data = torch.load(self.cache_file, map_location='cpu', weights_only=True)
        return data

    def load_data_list(self) -> List[dict]:
        data = self._load_or_synthesize()
        items = [dict(img=image.numpy(), gt_label=int(label), sample_idx=i)
                 for i, (image, label) in enumerate(zip(data['images'], data['labels']))]
        if self.soft_label_tau is not None:
            scores = (data['teacher_logits'] / self.soft_label_tau).softmax(dim=1)
            for item, score in zip(items, scores):
                # a copy: a row view would carry (and pickle) the whole (N, K) matrix
                item['gt_score'] = score.clone()
        return items
