"""Where a teacher checkpoint is loaded (:func:`load_teacher_checkpoint`), and how the teacher is
frozen and its norm layers run.

``teacher_ckpt`` and a teacher's ``pretrained=<path>`` both load here; what the keys of a
distillation or student checkpoint look like lives in
:mod:`mmkd.models.algorithms.checkpoint_layout`, how files are read (``weights_only``, trust) in
:mod:`mmkd.utils.checkpoint`.
"""
from typing import List, Mapping, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmkd.utils.checkpoint import load_checkpoint_file
from .checkpoint_layout import check_state_dict, state_dict_of, state_for_model

NORM_MODES = ('train', 'eval')
#: How a user trusts a teacher checkpoint that needs full unpickling (trusted directories never
#: apply to a teacher: a downloaded file copied into the work dir is as untrusted as before).
TRUST_TEACHER_OPTION = ('set trust_teacher_ckpt=True on the distillation algorithm '
                        '(model.trust_teacher_ckpt=True)')


def load_teacher_checkpoint(teacher: nn.Module, filename: str, trusted: bool = False) -> None:
    """Load ``filename`` into ``teacher`` strictly, on the CPU.

    The file loads with ``weights_only=True`` unless ``trusted``; trusted directories do not
    apply (see :mod:`mmkd.utils.checkpoint`). A DDP ``module.`` prefix is removed, and the
    student of an mmkd/MMRazor distillation checkpoint (``student.``/``architecture.`` keys) is
    taken out (:func:`~mmkd.models.algorithms.checkpoint_layout.state_for_model`).

    Raises:
        UserFileNotFoundError: The file is missing (the message names the path).
        CheckpointError: The file is truncated, not a checkpoint, or needs full unpickling
            (:class:`~mmkd.utils.checkpoint.UntrustedCheckpointError`) without ``trusted``.
        CheckpointMismatchError: Keys do not match: lists how many and the first ones of each
            kind.
    """
    checkpoint = load_checkpoint_file(filename, 'cpu', trusted, role='teacher checkpoint',
                                      trust_dirs=False, trust_option=TRUST_TEACHER_OPTION)
    expected = teacher.state_dict()
    state, _ = state_for_model(state_dict_of(checkpoint, f'teacher checkpoint {filename}'),
                               expected)
    check_state_dict(
        state, expected,
        f'teacher checkpoint {filename} does not match the teacher model '
        f'({type(teacher).__name__})',
        'Check that `teacher` is the architecture this checkpoint was trained with.',
        optional_suffixes=())
    teacher.load_state_dict(state, strict=True)


def freeze(model: nn.Module) -> None:
    """No gradients for ``model``'s parameters, ever."""
    for param in model.parameters():
        param.requires_grad_(False)


def use_batch_statistics_without_updates(model: nn.Module) -> None:
    """Make the BN layers of ``model`` normalise with batch statistics in train mode *without*
    updating their running statistics, so the teacher stays bit-identical while distilling
    (its running statistics are still used in eval mode)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False


def set_teacher_mode(teacher: nn.Module, norm_mode: str, training: bool) -> None:
    """Teacher in eval mode; its BN layers in train mode when ``norm_mode='train'`` and the
    algorithm is training (OFD's paper setting)."""
    teacher.eval()
    if training and norm_mode == 'train':
        for module in teacher.modules():
            if isinstance(module, _BatchNorm):
                module.train()


def rounded_teacher_tensors(teacher: nn.Module, state_dict: Mapping[str, object],
                            prefix: str) -> List[Tuple[str, torch.dtype, torch.dtype]]:
    """``(key, its dtype, the teacher's dtype)`` of every tensor of ``state_dict`` (an
    algorithm's, the teacher under ``{prefix}teacher.``) in a lower float precision than the
    teacher's own: loading it rounds the teacher, e.g. a checkpoint saved with
    ``teacher_dtype='bf16'`` resumed without it."""
    rounded = []
    tensors = dict(teacher.named_parameters())
    tensors.update(teacher.named_buffers())
    for name, own in tensors.items():
        key = f'{prefix}teacher.{name}'
        incoming = state_dict.get(key)
        if (isinstance(incoming, torch.Tensor) and incoming.is_floating_point()
                and own.is_floating_point()
                and torch.finfo(incoming.dtype).bits < torch.finfo(own.dtype).bits):
            rounded.append((key, incoming.dtype, own.dtype))
    return rounded
