"""What the tools call: build the runners of ``tools/train.py`` and ``tools/test.py``, export the
student of a distillation checkpoint, list the layers a config can tap."""
from .export import export_student, student_checkpoint, student_state_dict
from .test import build_test_runner
from .train import build_train_runner

__all__ = [
    'build_test_runner', 'build_train_runner', 'export_student', 'student_checkpoint',
    'student_state_dict'
]
