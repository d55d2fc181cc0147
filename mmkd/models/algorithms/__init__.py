from .single_teacher_distill import SingleTeacherDistill
from .crosskd import CrossKDDistill, EmptyDistiller
from .dearkd import DearKD
from .ofd import OverhaulFeatureDistillation

__all__ = ['SingleTeacherDistill', 'DearKD', 'OverhaulFeatureDistillation', 'CrossKDDistill',
           'EmptyDistiller']
