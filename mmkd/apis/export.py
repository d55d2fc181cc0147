"""Where a student is exported: the student of a distillation checkpoint, written as a
checkpoint of the stock student model (``tools/export_student.py``), and checked.

The keys of distillation, student and MMRazor checkpoints, the layout of a student checkpoint
and its one writer (:func:`~mmkd.models.algorithms.checkpoint_layout.save_student_checkpoint`,
also used by :class:`mmkd.engine.StudentCheckpointHook` while training) live in
:mod:`mmkd.models.algorithms.checkpoint_layout`.
"""
import os.path as osp
from typing import Tuple

from mmkd.models.algorithms.checkpoint_layout import (check_state_dict, describe_checkpoint,
                                                      save_student_checkpoint, state_dict_of,
                                                      student_checkpoint, student_state_dict)
from mmkd.utils.checkpoint import load_checkpoint_file
from mmkd.utils.errors import UserFileExistsError

# student_checkpoint and student_state_dict are part of mmkd.apis (see its __init__).
__all__ = [
    'check_export_paths', 'check_student_checkpoint', 'export_student', 'student_checkpoint',
    'student_state_dict'
]


def check_export_paths(checkpoint_path: str, out_path: str, force: bool = False) -> None:
    """Refuse an ``out_path`` that is the checkpoint itself (the same file under another
    spelling, a symbolic or a hard link), a directory, or an existing file without ``force``.

    Raises:
        UserFileExistsError: One of the above; also a ``FileExistsError``.
    """
    if not osp.lexists(out_path):
        return
    if osp.exists(checkpoint_path) and osp.exists(out_path) and osp.samefile(checkpoint_path,
                                                                             out_path):
        raise UserFileExistsError(
            f'OUT {out_path} is the distillation checkpoint {checkpoint_path} itself (the same '
            'file, a link to it or a hard link): exporting would overwrite it. Give another '
            'OUT path (--force does not change this).')
    if osp.isdir(out_path):
        raise UserFileExistsError(f'OUT {out_path} is a directory; give the path of the student '
                                  f'checkpoint file to write, e.g. {out_path}/student.pth.')
    if not force:
        raise UserFileExistsError(f'OUT {out_path} already exists; give another path, or add '
                                  '--force (force=True) to replace it.')


def export_student(checkpoint_path: str, out_path: str, trusted: bool = False,
                   force: bool = False) -> str:
    """Write the student of ``checkpoint_path`` to ``out_path`` atomically; return
    ``out_path``.

    Args:
        checkpoint_path: A distillation checkpoint (mmkd's or MMRazor's).
        out_path: The student checkpoint to write.
        trusted: Allow full unpickling of a legacy checkpoint.
        force: Replace an existing ``out_path`` (never the checkpoint itself).

    Raises:
        UserFileExistsError: See :func:`check_export_paths`.
    """
    check_export_paths(checkpoint_path, out_path, force)
    checkpoint = load_checkpoint_file(checkpoint_path, 'cpu', trusted,
                                      role='distillation checkpoint',
                                      trust_option='add --trust (trusted=True)')
    state = state_dict_of(checkpoint, f'distillation checkpoint {checkpoint_path}')
    return save_student_checkpoint(student_state_dict(state), checkpoint.get('meta'), out_path)


def check_student_checkpoint(config: str, checkpoint_path: str) -> Tuple[int, int]:
    """Load a student checkpoint strictly into the student model of ``config``.

    Args:
        config: The distillation config (its ``architecture`` is built) or the stock student
            config; built without pretrained weights.
        checkpoint_path: A student-only checkpoint.

    Returns:
        tuple: The number of tensors loaded and of parameters in the model.

    Raises:
        CheckpointMismatchError: Missing, unexpected or resized keys (how many, and the first
            of each); also a ``KeyError``.
    """
    from .taps import load_models
    model = next(iter(load_models(config, roles=('student', )).values()))
    state = state_dict_of(load_checkpoint_file(checkpoint_path, 'cpu', role='student checkpoint'),
                          f'student checkpoint {checkpoint_path}')
    expected = model.state_dict()
    check_state_dict(
        state, expected, f'{checkpoint_path} does not load strictly into the student of {config}',
        f'{describe_checkpoint(state, expected)}Fix: check it with the distillation config that '
        'wrote it or with the stock config of its student.', optional_suffixes=())
    model.load_state_dict(state, strict=True)
    return len(state), sum(p.numel() for p in model.parameters())
