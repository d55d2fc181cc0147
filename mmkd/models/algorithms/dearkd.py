"""DearKD's early distillation: the distillation token follows the training stage."""
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigTypeError
from .single_teacher_distill import SingleTeacherDistill


@MODELS.register_module()
class DearKD(SingleTeacherDistill):
    """DearKD (Chen et al., CVPR 2022): :class:`SingleTeacherDistill` for a student with DeiT's
    distillation token.

    Stage 1 (``set_distillation(True)``, the start): the teacher runs; the distiller's losses
    (distillation of the distillation token, aligner feature loss) train the student together
    with its class-token loss; the student head (:class:`DearKDClsHead`) leaves its
    distillation token to the distiller (``dist_target='teacher'``).

    Stage 2 (``set_distillation(False)``, called by ``DistillSwitchHook(stop_at=...)``): the
    teacher no longer runs and the distillation token is trained on the ground truth
    (``dist_target='label'``), so the averaged two-token prediction keeps being trained.

    Args:
        See :class:`SingleTeacherDistill`. The student's ``head`` must have a
        ``dist_target`` attribute (:class:`DearKDClsHead`).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        head = getattr(self.student, 'head', None)
        if not hasattr(head, 'dist_target'):
            raise ConfigTypeError(f'DearKD needs a student head that trains a distillation '
                                  f'token (DearKDClsHead, type="mmkd.DearKDClsHead"), got '
                                  f'{type(head).__name__}. For a student without a '
                                  'distillation token use SingleTeacherDistill.')
        self._sync_head()

    def set_distillation(self, enabled: bool) -> None:
        """Switch stage 1 (distillation) on or off; the target of the student's distillation
        token follows: the teacher (through the distiller) while on, the labels while off.

        Args:
            enabled: Whether the teacher and the distiller's losses take part.
        """
        super().set_distillation(enabled)
        self._sync_head()

    def _sync_head(self) -> None:
        self.student.head.dist_target = 'teacher' if self.distillation_enabled else 'label'
