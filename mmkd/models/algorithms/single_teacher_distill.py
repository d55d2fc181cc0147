import numbers
import warnings
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from mmkd.registry import MODELS, build_component
from mmkd.utils.config import merge_dicts
from mmkd.utils.errors import ConfigError, ConfigRuntimeError, find_user_error
from ..builder import build_model_from_cfg
from ..data_samples import dummy_data_samples
from .teacher import (NORM_MODES, freeze, load_teacher_checkpoint, rounded_teacher_tensors,
                      set_teacher_mode, use_batch_statistics_without_updates)
from .teacher_runtime import TeacherRuntime

DataSamples = Optional[Union[List[BaseDataElement], dict]]


def _add_prefix(losses: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {f'{prefix}.{name}': value for name, value in losses.items()}


def check_dry_run_shape(shape: Any) -> Optional[Tuple[int, int, int]]:
    """``shape`` as a tuple ``(C, H, W)`` of positive ints, or ``None``.

    Raises:
        ConfigError: ``shape`` is anything else.
    """
    if shape is None:
        return None
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                       for v in shape)):
        raise ConfigError(
            f'dry_run_shape must be the input shape (C, H, W) of the build-time dry run, three '
            f'positive ints such as (3, 224, 224), or None to skip the dry run; got {shape!r}.')
    return tuple(int(v) for v in shape)


def merge_student_data_preprocessor(
        architecture: Union[dict, nn.Module], data_preprocessor: Optional[Union[dict, nn.Module]]
) -> Tuple[Union[dict, nn.Module], Optional[Union[dict, nn.Module]]]:
    """Merge the algorithm's ``data_preprocessor`` into the student's config.

    Precedence, lowest first: the student model's own preprocessor (that of its stock config),
    the algorithm's ``data_preprocessor`` (given in the algorithm dict, or the top-level
    ``data_preprocessor`` that mmengine's Runner puts there), the ``data_preprocessor`` of the
    ``architecture`` dict. A dict with ``_delete_=True`` replaces what is below it.

    Args:
        architecture: The student's config or module.
        data_preprocessor: The algorithm's ``data_preprocessor`` argument.

    Returns:
        tuple: The student's config and the preprocessor left for the algorithm itself (``None``
        when it was merged into the student's config, which then provides it).
    """
    if not (isinstance(data_preprocessor, dict) and isinstance(architecture, dict)):
        return architecture, data_preprocessor
    own = architecture.get('data_preprocessor')
    if isinstance(own, dict) and not own.get('_delete_', False):
        merged = merge_dicts(dict(data_preprocessor), dict(own))
    elif own is not None:
        merged = own
    else:
        merged = data_preprocessor
    return dict(architecture, data_preprocessor=merged), None


@MODELS.register_module()
class SingleTeacherDistill(BaseModel):
    """Distil a frozen teacher into a student through a distiller.

    ``loss`` mode runs the teacher (under ``no_grad``, only as far as its taps: a detector with
    backbone taps never runs its heads), then the student, and returns the student's task losses
    (prefixed ``student.``) and the distiller's losses. ``predict`` and ``tensor`` modes run the
    student alone, so stock evaluators and ``tools/test.py`` work on a distillation checkpoint.

    The teacher never gets gradients: its parameters are frozen, left out of the optimizer (see
    :class:`mmkd.engine.DefaultOptimWrapperConstructor`) and ignored by DDP; ``init_weights``
    never touches it.

    Args:
        architecture: The student: a model config, ``dict(cfg_path='mmpretrain::...',
            pretrained=False, **overrides)`` or a module.
        teacher: The teacher, in the same forms.
        distiller: The distiller config (e.g. ``ConfigurableDistiller``).
        teacher_ckpt: Checkpoint of the teacher, loaded strictly on the CPU. Required unless
            the teacher is built with ``pretrained`` weights or ``load_teacher=False``.
        trust_teacher_ckpt: Allow full unpickling of a legacy teacher checkpoint that holds
            Python objects besides tensors. Only for files from a trusted source.
        teacher_norm_mode: ``'eval'``: teacher BN layers use running statistics; ``'train'``:
            they use batch statistics while training (OFD's paper setting) without updating
            their running statistics.
        calculate_student_loss: Add the student's own task losses.
        stop_teacher_early: Stop the teacher's forward once its taps have recorded.
        dry_run_shape: Input shape (C, H, W) of the dry run made at build time to fill
            connector channels and check every loss's input shapes; ``None`` skips it (then
            connectors need explicit channels).
        load_teacher: ``False`` builds the teacher without weights (``teacher_ckpt`` and
            ``pretrained`` are ignored) and leaves teacher connectors (e.g. OFD's margins)
            unset: for evaluating a distillation checkpoint, which holds the teacher and the
            connectors (``tools/test.py`` sets it). Training needs ``True``.
        data_preprocessor: Merged into the student's (see
            :func:`merge_student_data_preprocessor`: the ``architecture`` dict's own
            ``data_preprocessor`` wins); the algorithm uses the student's preprocessor.
        init_cfg: Initialisation config of the algorithm.
        teacher_dtype: ``'bf16'`` or ``'fp16'``: the teacher's conv/linear weights in that
            dtype and its forward under autocast to it, its records cast back to the student's
            dtype (opt-in, changes numerics); ``None`` (default): as the student.
        memory_format: ``'channels_last'`` stores the 4-D weights of the student, the teacher
            and the connectors NHWC (conv networks); ``'contiguous'`` (default) leaves them.
        teacher_inference_mode: Run the teacher under ``torch.inference_mode`` instead of
            ``no_grad`` (its records are then copied into normal tensors). See
            :mod:`mmkd.models.algorithms.teacher_runtime`.
    """

    def __init__(self,
                 architecture: Union[dict, nn.Module],
                 teacher: Union[dict, nn.Module],
                 distiller: dict,
                 teacher_ckpt: Optional[str] = None,
                 trust_teacher_ckpt: bool = False,
                 teacher_norm_mode: str = 'eval',
                 calculate_student_loss: bool = True,
                 stop_teacher_early: bool = True,
                 dry_run_shape: Optional[Sequence[int]] = (3, 224, 224),
                 load_teacher: bool = True,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None,
                 teacher_dtype: Optional[str] = None,
                 memory_format: str = 'contiguous',
                 teacher_inference_mode: bool = False) -> None:
        self._teacher_runtime = TeacherRuntime.from_options(teacher_dtype, memory_format,
                                                            teacher_inference_mode)
        if teacher_norm_mode not in NORM_MODES:
            raise ConfigError(f'teacher_norm_mode must be one of {NORM_MODES}, '
                              f'got {teacher_norm_mode!r}.')
        dry_run_shape = check_dry_run_shape(dry_run_shape)
        architecture, data_preprocessor = merge_student_data_preprocessor(
            architecture, data_preprocessor)
        student = build_model_from_cfg(architecture, 'student')
        if data_preprocessor is None:
            data_preprocessor = getattr(student, 'data_preprocessor', None)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = student
        self.load_teacher = load_teacher
        #: Whether the teacher holds trained weights (with ``load_teacher=False``: once a state
        #: dict with ``teacher.`` keys was loaded into the algorithm).
        self.teacher_has_weights = load_teacher
        self.teacher = self._build_teacher(teacher, teacher_ckpt, trust_teacher_ckpt)
        self.teacher_norm_mode = teacher_norm_mode
        if teacher_norm_mode == 'train':
            use_batch_statistics_without_updates(self.teacher)
        self.calculate_student_loss = calculate_student_loss
        self.stop_teacher_early = stop_teacher_early
        #: Switched off by ``DistillSwitchHook``: then the teacher no longer runs.
        self.distillation_enabled = True
        self.distiller = build_component(MODELS, distiller)
        self.distiller.prepare(self.student, self.teacher)
        self._dry_run_shape = dry_run_shape
        self._dry_run()
        self._teacher_runtime.apply(self.student, self.teacher, self.distiller)
        self._ddp_params_and_buffers_to_ignore = [
            f'teacher.{name}' for name, _ in self.teacher.named_parameters()] + [
            f'teacher.{name}' for name, _ in self.teacher.named_buffers()]

    def _build_teacher(self, cfg: Union[dict, nn.Module], ckpt: Optional[str],
                       trusted: bool) -> nn.Module:
        pretrained = isinstance(cfg, dict) and cfg.get('pretrained') not in (None, False)
        if not self.load_teacher and pretrained:
            cfg = dict(cfg, pretrained=False)  # no download: the weights come later
        teacher = build_model_from_cfg(cfg, 'teacher', trusted)
        if self.load_teacher and ckpt is not None:
            load_teacher_checkpoint(teacher, ckpt, trusted)
        elif self.load_teacher and not pretrained and not isinstance(cfg, nn.Module):
            raise ConfigError('the teacher has no weights: set teacher_ckpt=<path to the trained '
                              "teacher's checkpoint> (or pretrained=True/<path> in its cfg_path "
                              'dict).')
        freeze(teacher)
        return teacher

    # -- build-time dry run --------------------------------------------------------------
    def _dry_input(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        device = next(self.student.parameters()).device
        return torch.randn((2, *self._dry_run_shape), generator=generator).to(device)

    def _run_teacher_for_dry_run(self) -> None:
        inputs = self._dry_input()
        with torch.no_grad(), self.distiller.teacher_recorders.recording(
                ignore_errors_after_complete=True):
            self.teacher(inputs, dummy_data_samples(self.teacher, inputs), mode='tensor')

    def _run_student_for_dry_run(self) -> None:
        inputs = self._dry_input()
        with torch.no_grad(), self.distiller.student_recorders.recording(
                ignore_errors_after_complete=True):
            self.student(inputs, dummy_data_samples(self.student, inputs), mode='tensor')

    def _run_model_for_dry_run(self, role: str, run: Callable[[], None]) -> None:
        """Run the teacher or the student on the dry-run input; an error of the model's own
        forward (not an mmkd user error, e.g. of a recorder) gets a note on the input size."""
        try:
            run()
        except Exception as error:
            if find_user_error(error) is None:
                error.add_note(
                    f'(raised by the {role}\'s forward in the build-time dry run of '
                    f'{type(self).__name__} on a random input of shape '
                    f'{(2, *self._dry_run_shape)}; if the {role} needs another input size, set '
                    'dry_run_shape=(C, H, W) in the algorithm to one both models accept)')
            raise

    def _dry_run(self) -> None:
        """Fill connector shapes, set teacher connectors up and check every loss's inputs.

        In order (the steps of :mod:`mmkd.models.connectors.base_connector`):

        1. Run the teacher and the student once on a random batch (2, *dry_run_shape*),
           recording their taps.
        2. Build the teacher connectors that wait for shapes.
        3. Let each teacher connector set itself up from the loaded teacher (e.g. OFD's
           margins); not with ``load_teacher=False``, whose connector state comes from the
           checkpoint loaded after building.
        4. Build the student connectors that wait for shapes and run every loss once, checking
           its input shapes.
        """
        if self._dry_run_shape is None:
            return
        was_training = self.training
        self.eval()
        try:
            self._run_model_for_dry_run('teacher', self._run_teacher_for_dry_run)
            self._run_model_for_dry_run('student', self._run_student_for_dry_run)
            self.distiller.build_teacher_connectors()
            if self.load_teacher:
                self.distiller.init_teacher_connectors(self.teacher,
                                                       self._run_teacher_for_dry_run)
            self.distiller.build_student_connectors_and_check()
        finally:
            self.train(was_training)

    # -- modes ---------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, data_samples: DataSamples = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise RuntimeError(f'Invalid mode "{mode}"; only "loss", "predict" and "tensor".')

    def loss(self, inputs: torch.Tensor,
             data_samples: DataSamples = None) -> Dict[str, torch.Tensor]:
        """Student task losses (``student.`` prefix, unless switched off) plus the distiller's
        losses (while distillation is on)."""
        distilling = self.distillation_enabled
        if not (distilling or self.calculate_student_loss):
            raise ConfigRuntimeError(
                'nothing to train: distillation is switched off (DistillSwitchHook) and '
                'calculate_student_loss is False. Set calculate_student_loss=True, or remove '
                'the DistillSwitchHook, or give it a stop_at after the end of training.')
        if distilling and self.distiller.needs_teacher:
            if not self.teacher_has_weights:
                raise ConfigError(
                    'the teacher has no weights: the algorithm was built with load_teacher=False '
                    '(for testing a checkpoint that holds the teacher) and no such checkpoint '
                    'was loaded. Train with load_teacher=True and teacher_ckpt=<path>.')
            self._run_teacher(inputs, data_samples)
        losses = {}
        recording = (self.distiller.student_recorders.recording(
            stop_when_complete=not self.calculate_student_loss) if distilling else nullcontext())
        with recording:
            if self.calculate_student_loss:
                losses.update(_add_prefix(self.student(inputs, data_samples, mode='loss'),
                                          'student'))
            else:
                self.student(inputs, data_samples, mode='tensor')
        if distilling:
            losses.update(self.distiller.compute_distill_losses())
        return losses

    def set_distillation(self, enabled: bool) -> None:
        """Switch distillation on or off (``DistillSwitchHook`` calls this). Off: the teacher
        no longer runs and only the student's own losses train it. Subclasses whose student
        changes with the stage (e.g. DearKD's distillation token) extend it.

        Args:
            enabled: Whether the teacher and the distiller's losses take part.
        """
        self.distillation_enabled = bool(enabled)

    def _run_teacher(self, inputs: torch.Tensor, data_samples: DataSamples) -> None:
        runtime = self._teacher_runtime
        with runtime.teacher_context(inputs.device), self.distiller.teacher_recorders.recording(
                stop_when_complete=self.stop_teacher_early):
            self.teacher(inputs, data_samples, mode='tensor')
        runtime.finish_records(self.distiller.teacher_recorders,
                               next(self.student.parameters()).dtype)

    # -- modes of the teacher and the initialisation --------------------------------------
    def train(self, mode: bool = True) -> 'SingleTeacherDistill':
        super().train(mode)
        set_teacher_mode(self.teacher, self.teacher_norm_mode, mode)
        return self

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        rounded = rounded_teacher_tensors(self.teacher, state_dict, prefix)
        if rounded:
            key, saved, own = rounded[0]
            warnings.warn(
                f'{len(rounded)} teacher tensors of the loaded state are in a lower precision '
                f'than the model\'s teacher (e.g. {key!r}: {saved}, the model {own}): the '
                'teacher is loaded rounded, not as its teacher_ckpt holds it. Such a checkpoint '
                "was saved with teacher_dtype='bf16' or 'fp16'; set the same teacher_dtype to "
                'resume it as it ran (the student is not affected).', UserWarning)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if any(key.startswith(f'{prefix}teacher.') for key in state_dict):
            self.teacher_has_weights = True

    def init_weights(self) -> None:
        """Initialise the student and the distiller; the teacher keeps its loaded weights."""
        for module in (self.student, self.distiller):
            if hasattr(module, 'init_weights'):
                module.init_weights()
        self._is_init = True

    def remove_recorders(self) -> None:
        """Remove every hook the distiller placed on the student and the teacher."""
        self.distiller.remove_recorders()

    def __del__(self) -> None:
        distiller = self.__dict__.get('_modules', {}).get('distiller')
        if distiller is not None:
            distiller.remove_recorders()
