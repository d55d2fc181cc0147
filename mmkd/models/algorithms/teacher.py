"""Loading, freezing and norm-mode handling of the teacher."""
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmkd.utils.checkpoint import load_checkpoint_file
from mmkd.utils.errors import CheckpointError, CheckpointMismatchError

NORM_MODES = ('train', 'eval')
#: How a user trusts a teacher checkpoint that needs full unpickling (trusted directories never
#: apply to a teacher: a downloaded file copied into the work dir is as untrusted as before).
TRUST_TEACHER_OPTION = ('set trust_teacher_ckpt=True on the distillation algorithm '
                        '(model.trust_teacher_ckpt=True)')
_WRAPPER_PREFIXES = ('module.', )
_DISTILL_PREFIXES = ('student.', 'architecture.')


def _state_dict_of(checkpoint, filename: str) -> Dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict']
    if isinstance(checkpoint, dict):
        return checkpoint
    raise CheckpointError(f'teacher checkpoint {filename} holds a {type(checkpoint).__name__}, '
                          'not a state dict or a checkpoint dict with a `state_dict`.')


def _strip_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))


def _matching_state(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Undo a DDP ``module.`` prefix; take the student of an mmkd/MMRazor distillation
    checkpoint (``student.``/``architecture.`` keys) when the model's keys are not found."""
    expected = set(model.state_dict())
    if expected & set(state):
        return state
    for prefix in _WRAPPER_PREFIXES + _DISTILL_PREFIXES:
        stripped = _strip_prefix(state, prefix)
        if expected & set(stripped):
            return stripped
    return state


def load_teacher_checkpoint(teacher: nn.Module, filename: str, trusted: bool = False) -> None:
    """Load ``filename`` into ``teacher`` strictly, on the CPU.

    The file loads with ``weights_only=True`` unless ``trusted``; trusted directories do not
    apply (see :mod:`mmkd.utils.checkpoint`).

    Raises:
        UserFileNotFoundError: The file is missing (the message names the path).
        CheckpointError: The file is truncated, not a checkpoint, or needs full unpickling
            (:class:`~mmkd.utils.checkpoint.UntrustedCheckpointError`) without ``trusted``.
        CheckpointMismatchError: Keys do not match: lists how many and the first ones of each
            kind.
    """
    checkpoint = load_checkpoint_file(filename, 'cpu', trusted, role='teacher checkpoint',
                                      trust_dirs=False, trust_option=TRUST_TEACHER_OPTION)
    state = _matching_state(_state_dict_of(checkpoint, filename), teacher)
    expected = teacher.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [f'{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or resized:
        raise CheckpointMismatchError(
            f'teacher checkpoint {filename} does not match the teacher model '
            f'({type(teacher).__name__}): {len(missing)} missing keys (e.g. {missing[:3]}), '
            f'{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), {len(resized)} keys '
            f'of another shape (checkpoint vs model, e.g. {resized[:2]}). Check that `teacher` '
            'is the architecture this checkpoint was trained with.')
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
