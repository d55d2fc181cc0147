"""DearKD's early distillation: the distillation token follows the training stage."""
from mmkd.registry import MODELS
from mmkd.utils.errors import ConfigTypeError
from .single_teacher_distill import SingleTeacherDistill


@MODELS.register_module()
class DearKD(SingleTeacherDistill):
    """DearKD (Chen et al., CVPR 2022): :class:`SingleTeacherDistill` for a student with DeiT's
    distillation token.

    Stage 1 (``distillation_enabled``): the teacher runs; the distiller's losses (hard-label
    distillation of the distillation token, aligner feature loss) train the student together
    with its class-token loss; the student head (:class:`DearKDClsHead`) leaves its
    distillation token to the distiller (``dist_target='teacher'``).

    Stage 2 (after ``DistillSwitchHook(stop_at=...)``): the teacher no longer runs and the
    distillation token is trained on the ground truth (``dist_target='label'``), so the
    averaged two-token prediction keeps being trained.

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

    @property
    def distillation_enabled(self) -> bool:
        """Whether stage 1 (distillation) is on; switching it also switches the target of the
        student's distillation token."""
        return self.__dict__.get('_distillation_enabled', True)

    @distillation_enabled.setter
    def distillation_enabled(self, value: bool) -> None:
        self.__dict__['_distillation_enabled'] = bool(value)
        self._sync_head()

    def _sync_head(self) -> None:
        head = getattr(self.__dict__.get('_modules', {}).get('student'), 'head', None)
        if hasattr(head, 'dist_target'):
            head.dist_target = 'teacher' if self.distillation_enabled else 'label'
