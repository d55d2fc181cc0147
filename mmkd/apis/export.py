"""Take the student alone out of a distillation checkpoint.

Both writers of student-only checkpoints — :func:`export_student` (``tools/export_student.py``)
and :class:`mmkd.engine.StudentCheckpointHook` — build the file with
:func:`make_student_checkpoint` and write it with :func:`mmkd.utils.checkpoint.atomic_save`.
"""
import os.path as osp
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

import torch

from mmkd.utils.checkpoint import atomic_save, load_checkpoint_file, to_weights_only_safe
from mmkd.utils.errors import CheckpointMismatchError, UserFileExistsError

#: Key prefixes of the student in a distillation state dict: mmkd's, then MMRazor's.
STUDENT_PREFIXES = ('student.', 'architecture.')


def student_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """The student's weights of a distillation algorithm's state dict, prefix removed.

    Reads mmkd's ``student.`` keys, or MMRazor's ``architecture.`` keys.

    Raises:
        CheckpointMismatchError: The state dict holds no student keys (not a distillation
            checkpoint); also a ``KeyError``.
    """
    for prefix in STUDENT_PREFIXES:
        student = OrderedDict((key[len(prefix):], value)
                              for key, value in state_dict.items() if key.startswith(prefix))
        if student:
            return student
    sample = list(state_dict)[:3]
    raise CheckpointMismatchError(
        f'no {" or ".join(map(repr, STUDENT_PREFIXES))} keys in this state dict (e.g. '
        f'{sample}); it is not the checkpoint of a distillation algorithm.')


def make_student_checkpoint(student_state: Mapping[str, torch.Tensor],
                            meta: Optional[dict] = None) -> dict:
    """The checkpoint of a student alone: the one layout of every student-only file.

    Args:
        student_state: The student's state dict, under the stock model's keys.
        meta: The run's ``meta`` (``epoch``, ``iter``, ``dataset_meta``...); stored as
            tensors and plain containers with ``exported_from_distillation=True`` added.

    Returns:
        dict: ``{'meta': ..., 'state_dict': ...}`` with detached CPU tensors; loads with
        ``torch.load(weights_only=True)`` and strictly into the stock student model.
    """
    meta = to_weights_only_safe(dict(meta or {}, exported_from_distillation=True))
    state = OrderedDict((key, value.detach().cpu()) for key, value in student_state.items())
    return {'meta': meta, 'state_dict': state}


def student_checkpoint(checkpoint: dict) -> dict:
    """The student of a distillation checkpoint with the run's ``meta`` (see
    :func:`make_student_checkpoint`); loads strictly into the stock student model
    (``load_checkpoint`` and ``tools/test.py`` of the student config)."""
    state = checkpoint.get('state_dict', checkpoint)
    return make_student_checkpoint(student_state_dict(state), checkpoint.get('meta', {}))


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
    return atomic_save(student_checkpoint(checkpoint), out_path)


def check_student_checkpoint(config: str, checkpoint_path: str) -> Tuple[int, int]:
    """Load a student checkpoint strictly into the student model of ``config``.

    Args:
        config: The distillation config (its ``architecture`` is built) or the stock student
            config; built without pretrained weights.
        checkpoint_path: A student-only checkpoint.

    Returns:
        tuple: The number of tensors loaded and of parameters in the model.

    Raises:
        CheckpointMismatchError: Missing or unexpected keys (how many, and the first of each);
            also a ``KeyError``.
    """
    from .taps import load_models
    model = next(iter(load_models(config, roles=('student', )).values()))
    state = load_checkpoint_file(checkpoint_path, 'cpu', role='student checkpoint')
    state = state.get('state_dict', state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f'{checkpoint_path} does not load strictly into the student of {config}: '
            f'{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected '
            f'keys (e.g. {unexpected[:3]}).')
    return len(state), sum(p.numel() for p in model.parameters())
