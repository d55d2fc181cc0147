from .atomic_checkpoint_hook import AtomicCheckpointHook
from .distill_switch_hook import DistillSwitchHook
from .ofd_margin_hook import OFDMarginHook
from .rng_state_hook import RNGStateHook
from .safe_checkpoint_hook import SafeCheckpointHook
from .strict_load_hook import StrictLoadHook
from .student_checkpoint_hook import StudentCheckpointHook
from .teacher_eval_hook import TeacherEvalHook

__all__ = ['AtomicCheckpointHook', 'DistillSwitchHook', 'OFDMarginHook', 'RNGStateHook',
           'SafeCheckpointHook', 'StrictLoadHook',
           'StudentCheckpointHook', 'TeacherEvalHook']
