"""How the frozen teacher's forward runs: its precision, the memory format of both models, and
the grad mode. All opt-in options of :class:`SingleTeacherDistill`; the defaults change nothing.

- ``teacher_dtype='bf16'`` / ``'fp16'``: the teacher's conv and linear weights are stored in
  that dtype and its forward runs under autocast to it (norm layers keep float32 parameters;
  autocast decides per op), independent of the student's AMP. What the teacher's recorders
  recorded is cast back to the student's dtype after the forward, so connectors and losses see
  the dtypes they saw before. This changes numerics (bfloat16 keeps about 3 significant
  digits): measure the effect on accuracy before relying on it.
- ``memory_format='channels_last'``: the 4-D weights of the student, the teacher and the
  distiller's connectors are stored channels-last (NHWC), so convolutions run on NHWC
  activations without layout conversions (for conv networks; exact up to the order of float
  additions).
- ``teacher_inference_mode=True``: the teacher runs under ``torch.inference_mode`` instead of
  ``torch.no_grad``. Inference tensors cannot be saved for a backward pass and carry no version
  counter, so every recorded tensor is copied into a normal tensor after the forward (in the
  cast of ``teacher_dtype`` when there is one).
"""
import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager, Optional

import torch
import torch.nn as nn

from mmkd.utils.errors import ConfigError

#: ``teacher_dtype`` values and the dtype each stands for.
TEACHER_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
#: ``memory_format`` values and the torch memory format each stands for.
MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}
#: Modules whose weights ``teacher_dtype`` stores in low precision (what autocast runs in it).
LOW_PRECISION_MODULES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class TeacherRuntime:
    """The validated options (see the module's docstring).

    Attributes:
        dtype: The teacher's compute dtype, ``None`` for the student's.
        memory_format: The models' memory format.
        inference_mode: Whether the teacher runs under ``torch.inference_mode``.
    """
    dtype: Optional[torch.dtype] = None
    memory_format: torch.memory_format = torch.contiguous_format
    inference_mode: bool = False

    @classmethod
    def from_options(cls, teacher_dtype: Optional[str], memory_format: str,
                     teacher_inference_mode: bool) -> 'TeacherRuntime':
        """Check the algorithm's options.

        Raises:
            ConfigError: A value outside the allowed ones, naming the option and them.
        """
        if teacher_dtype is not None and teacher_dtype not in TEACHER_DTYPES:
            raise ConfigError(f'teacher_dtype must be one of {sorted(TEACHER_DTYPES)} or None '
                              f'(the student\'s dtype), got {teacher_dtype!r}.')
        if memory_format not in MEMORY_FORMATS:
            raise ConfigError(f'memory_format must be one of {sorted(MEMORY_FORMATS)}, got '
                              f'{memory_format!r}.')
        if not isinstance(teacher_inference_mode, bool):
            raise ConfigError('teacher_inference_mode must be True or False, got '
                              f'{teacher_inference_mode!r}.')
        return cls(TEACHER_DTYPES.get(teacher_dtype), MEMORY_FORMATS[memory_format],
                   teacher_inference_mode)

    @property
    def changes_records(self) -> bool:
        """Whether the teacher's records need converting after its forward."""
        return self.dtype is not None or self.inference_mode

    # -- once, after the build-time dry run ----------------------------------------------
    def apply(self, student: nn.Module, teacher: nn.Module, distiller: nn.Module) -> None:
        """Store the weights as the options ask (after the dry run, which measured in the
        student's precision: OFD's margins come from the float32 teacher)."""
        if self.memory_format is not torch.contiguous_format:
            for model in (student, teacher, distiller):
                model.to(memory_format=self.memory_format)
        if self.dtype is not None:
            for module in teacher.modules():
                if isinstance(module, LOW_PRECISION_MODULES):
                    module.to(self.dtype)

    # -- every step -----------------------------------------------------------------------
    def teacher_context(self, device: torch.device) -> ContextManager:
        """The grad mode and autocast of the teacher's forward."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode() if self.inference_mode else torch.no_grad())
        if self.dtype is not None:
            stack.enter_context(torch.autocast(device_type=device.type, dtype=self.dtype))
        return stack

    def finish_records(self, recorders: Any, dtype: torch.dtype) -> None:
        """Convert what the teacher's recorders hold: floating tensors to ``dtype`` (the
        student's), inference tensors into normal ones.

        Args:
            recorders (RecorderManager): The teacher's recorders, after its forward.
            dtype: The student's parameter dtype.
        """
        if not self.changes_records:
            return

        def convert(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.is_floating_point() and tensor.dtype != dtype:
                return tensor.to(dtype)
            return tensor.clone() if tensor.is_inference() else tensor

        for recorder in recorders.recorders.values():
            recorder.map_records(convert)
