"""DF-DearKD's data-free distillation: images synthesised from the teacher.

The synthesis objectives (DeepInversion's priors, the intra-divergence term) live here, next
to the synthesizer that optimises them; they act on images and the teacher's embeddings, not
on a student, so they are not distillation losses (``mmkd.models.losses``).
"""
from .deep_inversion import DeepInversionSynthesizer, teacher_logits_and_embeddings
from .deep_inversion_priors import BNStatisticsLoss, bn_statistics_term, l2_prior, total_variation
from .fingerprint import synthesis_fingerprint, teacher_weights_hash
from .intra_divergence import IntraDivergenceLoss, intra_divergence_terms
from .synthetic_dataset import DeepInversionDataset, to_pixels

__all__ = [
    'DeepInversionSynthesizer', 'teacher_logits_and_embeddings', 'BNStatisticsLoss',
    'bn_statistics_term', 'l2_prior', 'total_variation', 'IntraDivergenceLoss',
    'intra_divergence_terms', 'DeepInversionDataset', 'to_pixels', 'synthesis_fingerprint',
    'teacher_weights_hash'
]
