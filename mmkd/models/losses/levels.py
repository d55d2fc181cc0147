"""Losses that take one feature map or the levels of a feature pyramid (a tuple of maps)."""
from typing import List, Sequence, Tuple, Union

import torch

from mmkd.utils.errors import ShapeMismatchError

#: One map (B, C, H, W), or the levels of a feature pyramid.
Levels = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_tuple(value: Levels) -> Tuple[torch.Tensor, ...]:
    if isinstance(value, torch.Tensor):
        return (value, )
    return tuple(value)


def paired_levels(loss: str, student: Levels,
                  teacher: Levels) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Pair the student's and the teacher's maps level by level, as float32.

    Args:
        loss: The loss's name, for messages.
        student: A map (B, C, H, W) or a tuple/list of maps, one per pyramid level (a neck's
            output, e.g. FPN's P3..P7).
        teacher: The same for the teacher.

    Returns:
        list: ``(student_level, teacher_level)`` pairs. A tuple argument escapes
        :func:`float32_reduction` (it casts tensors only): compute each level with a function
        that carries the decorator itself.

    Raises:
        ShapeMismatchError: One side is a map and the other a tuple, the numbers of levels
            differ, or a level is not a 4-D map.
    """
    if isinstance(student, torch.Tensor) != isinstance(teacher, torch.Tensor):
        raise ShapeMismatchError(
            f'{loss}: the student gives {_describe(student)} but the teacher '
            f'{_describe(teacher)}. Tap the same kind of module on both sides (a neck on both, '
            'or one level on both).')
    students, teachers = _as_tuple(student), _as_tuple(teacher)
    if len(students) != len(teachers) or not students:
        raise ShapeMismatchError(
            f'{loss}: the student gives {len(students)} pyramid levels and the teacher '
            f'{len(teachers)}. Both necks must output the same number of levels (num_outs).')
    for index, (s, t) in enumerate(zip(students, teachers)):
        if s.dim() != 4 or t.dim() != 4:
            raise ShapeMismatchError(
                f'{loss}: level {index} has shapes {tuple(s.shape)} (student) and '
                f'{tuple(t.shape)} (teacher); it takes feature maps or logits (B, C, H, W).')
    return list(zip(students, teachers))


def _describe(value: Levels) -> str:
    if isinstance(value, torch.Tensor):
        return f'one map of shape {tuple(value.shape)}'
    return f'a tuple of {len(value)} levels'


#: The end of a shape-mismatch message: how to map the student to the teacher.
CONNECTOR_FIX = ("Add student_connector=dict(type='ConvBNConnector') (channels) or "
                 "dict(type='ResizeConnector') (spatial size) to the tap pair; connectors map "
                 'one tensor, so for a neck tap each level on its own (neck.fpn_convs.<i>, '
                 'listed by tools/list_taps.py --modules) to give it one.')
