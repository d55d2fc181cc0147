"""DF-DearKD's image synthesis: DeepInversion plus the boundary-preserving intra-divergence
loss, optimising images against a frozen teacher."""
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd.registry import TASK_UTILS
from mmkd.utils.errors import ConfigError
from .deep_inversion_priors import BNStatisticsLoss, l2_prior, total_variation
from .intra_divergence import IntraDivergenceLoss


#: Values of ``DeepInversionSynthesizer(amp_dtype=...)``.
AMP_DTYPES = (None, 'bfloat16', 'float16')


def teacher_logits_and_embeddings(teacher: nn.Module,
                                  images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and embeddings (the head's ``pre_logits``) of an mmpretrain classifier.

    Args:
        teacher: An mmpretrain ``ImageClassifier`` (``extract_feat`` and ``head``).
        images: Normalised inputs, shape (B, 3, H, W).

    Returns:
        tuple: Logits (B, K) and embeddings (B, C).
    """
    feats = teacher.extract_feat(images)
    return teacher.head(feats), teacher.head.pre_logits(feats)


def cosine_lr(base_lr: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (DeepInversion's schedule)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


@TASK_UTILS.register_module()
class DeepInversionSynthesizer:
    """Synthesise labelled images from a trained teacher (DF-DearKD, Chen et al., CVPR 2022).

    The images ``x`` (in the teacher's normalised input space) are optimised with Adam to
    minimise::

        ce_weight * CE(teacher(x'), y) + bn_weight * BN statistics (DeepInversion)
        + tv_weight * TV(x') + l2_weight * L2(x')
        + ep_weight * (-d(anchor, easy positive)) + triplet_weight * triplet(hard pos./neg.)

    where ``x'`` is ``x`` resized to the stage's resolution (DeepInversion's multi-resolution
    schedule: the teacher first sees ``x`` downsampled, then at full size), randomly rolled
    by up to ``jitter`` pixels and, with ``flip``, randomly mirrored. The last two terms are
    :class:`IntraDivergenceLoss` on the teacher's embeddings (the classifier head's
    ``pre_logits``). ``ep_weight = triplet_weight = 0`` gives plain DeepInversion.

    Args:
        image_size: Side of the synthesised images.
        resolution_schedule: ``(side, iterations)`` per stage, e.g. ``((112, 2000), (224,
            2000))``; the last side must be ``image_size``. Each stage restarts Adam and
            the warm-up + cosine learning-rate schedule.
        lr: Adam learning rate. Defaults to 0.25 (DeepInversion).
        betas: Adam betas. Defaults to (0.5, 0.9) (DeepInversion).
        warmup_iters: Linear warm-up iterations per stage. Defaults to 100.
        ce_weight: Weight of the classification term. Defaults to 1.
        bn_weight: ``alpha_BN``. Defaults to 5e-2.
        first_bn_weight: Weight of the first BN layer inside the BN term. Defaults to 10.
        tv_weight: ``alpha_TV``. Defaults to 1e-4.
        l2_weight: ``alpha_L2``. Defaults to 1e-5.
        ep_weight: ``alpha_ep`` of the intra-divergence term. Defaults to 50.
        triplet_weight: ``alpha_triplet``. Defaults to 0.5.
        margin: Triplet margin between unit embeddings. Defaults to 0.2.
        jitter: Maximal random roll in pixels (at full resolution). Defaults to 30.
        flip: Random horizontal flips. Defaults to True (False for digits).
        clip: After each step, clamp the images to the normalised values of pixels in
            [0, 255] (from the teacher's data preprocessor ``mean``/``std``), as
            DeepInversion does. Defaults to True.
        amp_dtype: Mixed precision for the teacher's forward: ``None`` (float32),
            ``'bfloat16'`` or ``'float16'`` (autocast on the teacher's device; float16 with
            dynamic loss scaling). The images and Adam's state stay float32 and the objective
            is reduced in float32. Defaults to None.
        channels_last: Feed the teacher channels-last images (the same numbers in another
            memory layout): oneDNN's CPU convolutions run several times faster so. Defaults
            to True.
    """

    def __init__(self,
                 image_size: int = 224,
                 resolution_schedule: Sequence[Tuple[int, int]] = ((112, 2000), (224, 2000)),
                 lr: float = 0.25,
                 betas: Tuple[float, float] = (0.5, 0.9),
                 warmup_iters: int = 100,
                 ce_weight: float = 1.0,
                 bn_weight: float = 5e-2,
                 first_bn_weight: float = 10.0,
                 tv_weight: float = 1e-4,
                 l2_weight: float = 1e-5,
                 ep_weight: float = 50.0,
                 triplet_weight: float = 0.5,
                 margin: float = 0.2,
                 jitter: int = 30,
                 flip: bool = True,
                 clip: bool = True,
                 amp_dtype: Optional[str] = None,
                 channels_last: bool = True) -> None:
        schedule = [tuple(stage) for stage in resolution_schedule]
        if not schedule or schedule[-1][0] != image_size:
            raise ConfigError(f'DeepInversionSynthesizer: the last stage of '
                              f'resolution_schedule {schedule} must be at '
                              f'image_size={image_size}.')
        if any(side <= 0 or iters < 0 for side, iters in schedule):
            raise ConfigError(f'DeepInversionSynthesizer: bad resolution_schedule {schedule}: '
                              'give (side > 0, iterations >= 0) pairs.')
        self.image_size = image_size
        self.resolution_schedule = schedule
        self.lr, self.betas, self.warmup_iters = lr, tuple(betas), warmup_iters
        self.ce_weight, self.bn_weight, self.first_bn_weight = ce_weight, bn_weight, first_bn_weight
        self.tv_weight, self.l2_weight = tv_weight, l2_weight
        self.intra_divergence = IntraDivergenceLoss(ep_weight, triplet_weight, margin)
        self.jitter, self.flip, self.clip = jitter, flip, clip
        if amp_dtype not in AMP_DTYPES:
            raise ConfigError(f'DeepInversionSynthesizer: amp_dtype must be one of {AMP_DTYPES}, '
                              f'got {amp_dtype!r}.')
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last

    @property
    def num_steps(self) -> int:
        """Optimisation steps of one batch (all resolution stages)."""
        return sum(iterations for _, iterations in self.resolution_schedule)

    # -- the objective -------------------------------------------------------------------
    def objective(self, teacher: nn.Module, bn_loss: BNStatisticsLoss, images: torch.Tensor,
                  labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The weighted terms of the synthesis objective on ``images`` as the teacher sees
        them (no resizing or augmentation here).

        Args:
            teacher: The teacher, eval mode.
            bn_loss: BN statistics hooks attached to ``teacher``.
            images: Shape (B, 3, H, W), normalised.
            labels: Target classes, shape (B, ).

        Returns:
            dict: ``ce``, ``bn``, ``tv``, ``l2``, ``intra_divergence`` (weighted scalars).
        """
        logits, embeddings = teacher_logits_and_embeddings(teacher, images)
        return dict(
            ce=self.ce_weight * F.cross_entropy(logits, labels),
            bn=self.bn_weight * bn_loss.loss(),
            tv=self.tv_weight * total_variation(images),
            l2=self.l2_weight * l2_prior(images),
            intra_divergence=self.intra_divergence(embeddings, labels))

    def _augment(self, images: torch.Tensor, side: int,
                 generator: torch.Generator) -> torch.Tensor:
        if side != images.shape[-1]:
            images = F.interpolate(images, size=(side, side), mode='bilinear',
                                   align_corners=False, antialias=True)
        jitter = round(self.jitter * side / self.image_size)
        if jitter > 0:
            dy, dx = torch.randint(-jitter, jitter + 1, (2, ), generator=generator).tolist()
            images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        if self.flip and torch.rand((), generator=generator) < 0.5:
            images = torch.flip(images, dims=(3, ))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    # -- the optimisation ----------------------------------------------------------------
    def synthesize(self, teacher: nn.Module, labels: torch.Tensor,
                   generator: Optional[torch.Generator] = None,
                   return_history: bool = False,
                   on_step: Optional[Callable[[], None]] = None):
        """Optimise one batch of images for ``labels``.

        Args:
            teacher: The trained teacher (an mmpretrain classifier with BN layers); its mode
                is set to eval and restored afterwards, its weights are not changed.
            labels: Target classes, shape (B, ); several images per class make the
                intra-divergence term effective.
            generator: Random generator of the initial noise and the augmentations.
            return_history: Also return the total objective of every step.
            on_step: Called after every optimisation step (progress bars).

        Returns:
            Tensor: Images (B, 3, image_size, image_size) in the teacher's normalised input
            space; with ``return_history``, a pair (images, list of floats).
        """
        generator = generator or torch.Generator().manual_seed(0)
        device = next(teacher.parameters()).device
        labels = labels.to(device)
        images = torch.randn((len(labels), 3, self.image_size, self.image_size),
                             generator=generator).to(device).requires_grad_(True)
        was_training = teacher.training
        requires_grad = [p.requires_grad for p in teacher.parameters()]
        teacher.eval().requires_grad_(False)
        history = []
        pixel_range = self._pixel_range(teacher, images)
        try:
            with BNStatisticsLoss(teacher, self.first_bn_weight) as bn_loss:
                for side, iterations in self.resolution_schedule:
                    history += self._optimise_stage(teacher, bn_loss, images, labels, side,
                                                    iterations, generator, pixel_range, on_step)
        finally:
            teacher.train(was_training)
            for param, flag in zip(teacher.parameters(), requires_grad):
                param.requires_grad_(flag)
        images = images.detach()
        return (images, history) if return_history else images

    def _pixel_range(self, teacher: nn.Module,
                     images: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Normalised values of pixels 0 and 255, each (1, C, 1, 1); ``None`` without
        clipping or without a normalising data preprocessor."""
        preprocessor = getattr(teacher, 'data_preprocessor', None)
        mean, std = getattr(preprocessor, 'mean', None), getattr(preprocessor, 'std', None)
        if not self.clip or mean is None or std is None:
            return None
        mean, std = mean.to(images).view(1, -1, 1, 1), std.to(images).view(1, -1, 1, 1)
        return (0 - mean) / std, (255 - mean) / std

    def _optimise_stage(self, teacher: nn.Module, bn_loss: BNStatisticsLoss,
                        images: torch.Tensor, labels: torch.Tensor, side: int, iterations: int,
                        generator: torch.Generator,
                        pixel_range: Optional[Tuple[torch.Tensor, torch.Tensor]],
                        on_step: Optional[Callable[[], None]] = None) -> list:
        optimizer = torch.optim.Adam([images], lr=self.lr, betas=self.betas, eps=1e-8)
        device = images.device.type
        dtype = getattr(torch, self.amp_dtype) if self.amp_dtype else None
        scaler = torch.amp.GradScaler(device, enabled=self.amp_dtype == 'float16')
        history = []
        for step in range(iterations):
            for group in optimizer.param_groups:
                group['lr'] = cosine_lr(self.lr, step, iterations, self.warmup_iters)
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                terms = self.objective(teacher, bn_loss, self._augment(images, side, generator),
                                       labels)
            total = sum(terms.values())
            optimizer.zero_grad()
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            if pixel_range is not None:
                with torch.no_grad():
                    images.copy_(torch.maximum(torch.minimum(images, pixel_range[1]),
                                               pixel_range[0]))
            history.append(float(total.detach()))
            if on_step is not None:
                on_step()
        return history
