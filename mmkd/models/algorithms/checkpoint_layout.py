"""What the keys of mmkd's checkpoints look like, how the student is taken out of them, how a
state dict is compared with a model, and the one writer of student-only checkpoints.

Three kinds of state dict meet in mmkd:

- a **distillation checkpoint**: the state dict of a distillation algorithm
  (:class:`~mmkd.models.algorithms.SingleTeacherDistill` and its subclasses): ``student.*`` (the
  student), ``teacher.*`` and ``distiller.*`` (connectors, OFD margins). MMRazor's algorithms
  keep their student under ``architecture.*``; both are read (:data:`STUDENT_PREFIXES`).
- a **student checkpoint**: the student alone, under the stock model's keys (``backbone.*``,
  ``head.*``), with the ``meta`` of :data:`STUDENT_META_KEYS`; it loads strictly into the stock
  mmpretrain/mmdet/mmseg model.
- a **plain model's checkpoint** (a teacher's, a baseline's): the same keys as a student's.

Any of them may carry the ``module.`` prefix of a DDP-wrapped model (:func:`strip_wrapper_prefix`).

Where each is used (one file each):

- a teacher checkpoint is loaded by :func:`mmkd.models.algorithms.teacher.load_teacher_checkpoint`
  (``mmkd/models/algorithms/teacher.py``);
- a student is exported by :func:`mmkd.apis.export.export_student` (``mmkd/apis/export.py``,
  ``tools/export_student.py``) and saved while training by
  :class:`mmkd.engine.StudentCheckpointHook`; both write through :func:`save_student_checkpoint`;
- the checkpoint a run resumes from or loads (``StrictLoadHook``,
  ``mmkd/engine/hooks/strict_load_hook.py``) and the one ``tools/test.py`` tests
  (``StrictTestCheckpointHook``, ``mmkd/apis/test.py``) are compared with the model by
  :func:`check_state_dict`;
- how files are read (``weights_only``, trusted directories) and written atomically:
  :mod:`mmkd.utils.checkpoint`.

Examples:
    >>> state = {'student.head.fc.weight': torch.ones(2, 4),
    ...          'teacher.head.fc.weight': torch.ones(2, 8)}
    >>> list(student_state_dict(state))
    ['head.fc.weight']
    >>> compare_state_dicts({'w': torch.ones(2)}, {'w': torch.ones(3), 'b': torch.ones(3)})
    KeyMismatch(missing=['b'], unexpected=[], resized=['w: (2,) vs (3,)'])
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from mmkd.utils.checkpoint import atomic_save, to_weights_only_safe
from mmkd.utils.errors import CheckpointError, CheckpointMismatchError

StateDict = Dict[str, torch.Tensor]

#: Key prefixes of the student in a distillation state dict: mmkd's, then MMRazor's.
STUDENT_PREFIXES = ('student.', 'architecture.')
#: The ``meta`` of every student checkpoint: the keys of a run's own checkpoints (mmengine's
#: ``Runner.save_checkpoint``) that the source has, and ``exported_from_distillation=True``.
STUDENT_META_KEYS = ('epoch', 'iter', 'cfg', 'seed', 'experiment_name', 'time',
                     'mmengine_version', 'dataset_meta')
#: Keys a checkpoint may lack when compared with a model: torch fills the BN counter in.
OPTIONAL_KEY_SUFFIXES = ('num_batches_tracked', )
#: How many keys of each kind a mismatch message lists.
SHOWN_KEYS = 3
#: What mmengine's ``Runner.load_checkpoint`` strips from every key (its ``revise_keys``).
_WRAPPER_PREFIX = re.compile(r'^module\.')


# -- keys -----------------------------------------------------------------------------------
def state_dict_of(checkpoint: Any, name: str = 'checkpoint') -> StateDict:
    """The state dict of a loaded checkpoint file: its ``state_dict``, or the file itself.

    Args:
        checkpoint: What the file holds.
        name: The file's role and path, for the message (``'teacher checkpoint t.pth'``).

    Raises:
        CheckpointError: The file holds neither a dict nor a dict with a ``state_dict``.
    """
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict']
    if isinstance(checkpoint, dict):
        return checkpoint
    raise CheckpointError(f'{name} holds a {type(checkpoint).__name__}, not a state dict or a '
                          'checkpoint dict with a `state_dict`.')


def _rekeyed(state: Mapping[str, Any], rename: Callable[[str], Optional[str]]) -> StateDict:
    """The entries of ``state`` under ``rename(key)``, without those it maps to ``None``;
    torch's per-module ``_metadata`` (state versions) is renamed the same way."""
    rekeyed = OrderedDict()
    for key, value in state.items():
        new_key = rename(key)
        if new_key is not None:
            rekeyed[new_key] = value
    metadata = getattr(state, '_metadata', None)
    if metadata is not None:
        rekeyed._metadata = _rekeyed(metadata, rename)
    return rekeyed


def strip_wrapper_prefix(state: StateDict) -> StateDict:
    """``state`` without DDP's ``module.`` key prefix, as mmengine's ``load_checkpoint``."""
    return _rekeyed(state, lambda key: _WRAPPER_PREFIX.sub('', key))


def has_student_keys(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are those of a distillation algorithm (:data:`STUDENT_PREFIXES`)."""
    return any(key.startswith(STUDENT_PREFIXES) for key in keys)


def student_state_dict(state: StateDict) -> StateDict:
    """The student's weights of a distillation algorithm's state dict, prefix removed.

    Reads mmkd's ``student.`` keys, or MMRazor's ``architecture.`` keys.

    Args:
        state: The algorithm's state dict, e.g. ``{'student.head.fc.weight': (10, 32),
            'teacher.head.fc.weight': (10, 64), ...}``.

    Returns:
        OrderedDict: ``{'head.fc.weight': (10, 32), ...}``, with torch's ``_metadata``.

    Raises:
        CheckpointMismatchError: The state dict holds no student keys (not a distillation
            checkpoint); also a ``KeyError``.
    """
    for prefix in STUDENT_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            # the student module itself ('student' in _metadata) becomes the root ('')
            return _rekeyed(state, lambda key, p=prefix: key[len(p):] if key.startswith(p)
                            else '' if key == p[:-1] else None)
    sample = list(state)[:3]
    raise CheckpointMismatchError(
        f'no {" or ".join(map(repr, STUDENT_PREFIXES))} keys in this state dict (e.g. '
        f'{sample}); it is not the checkpoint of a distillation algorithm.')


def state_for_model(state: StateDict, expected: Mapping[str, Any]) -> Tuple[StateDict, bool]:
    """``state`` under the keys of the model whose state dict is ``expected``.

    Removes DDP's ``module.`` prefix, and takes the student out of a distillation state dict
    when the model is a plain one (a stock config, a teacher).

    Returns:
        tuple: The state dict, and whether it is the student part of a distillation state dict.
    """
    state = strip_wrapper_prefix(state)
    if has_student_keys(state) and not has_student_keys(expected):
        return student_state_dict(state), True
    return state, False


def holds_student_alone(state: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a student checkpoint and ``expected`` a distillation algorithm's."""
    return (not has_student_keys(state) and has_student_keys(expected)
            and any(f'{STUDENT_PREFIXES[0]}{key}' in expected for key in state))


def describe_checkpoint(state: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """A sentence for a mismatch message when ``state`` is a student alone and the model a
    distillation algorithm, or the other way round; ``''`` otherwise."""
    if holds_student_alone(state, expected):
        return ('It holds a student alone (tools/export_student.py and StudentCheckpointHook '
                'write such files), not a distillation checkpoint. ')
    if has_student_keys(state) and not has_student_keys(expected):
        return ('It is a distillation checkpoint and the model is a plain one: '
                'tools/export_student.py takes its student out. ')
    return ''


# -- comparing with a model -----------------------------------------------------------------
def _shown(keys: List[str]) -> str:
    return f'{len(keys)} (e.g. {keys[:SHOWN_KEYS]})' if keys else '0'


@dataclass
class KeyMismatch:
    """How a checkpoint's state dict differs from a model's.

    Args:
        missing: The model's keys that the checkpoint lacks.
        unexpected: The checkpoint's keys that the model lacks.
        resized: ``'key: checkpoint shape vs model shape'`` of the keys of another shape.
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.resized)

    def summary(self) -> str:
        """How many keys of each kind, and the first ones."""
        return (f'missing keys: {_shown(self.missing)}; unexpected keys: '
                f'{_shown(self.unexpected)}; keys of another shape (checkpoint vs model): '
                f'{_shown(self.resized)}')


def compare_state_dicts(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor],
                        optional_suffixes: Tuple[str, ...] = OPTIONAL_KEY_SUFFIXES
                        ) -> KeyMismatch:
    """Compare a checkpoint's ``state`` with a model's ``expected`` state dict, key by key and
    shape by shape.

    Args:
        state: The checkpoint's state dict, under the model's keys.
        expected: ``model.state_dict()``.
        optional_suffixes: Model keys the checkpoint may lack (``()``: none).

    Returns:
        KeyMismatch: Empty (false) when every key and shape matches.
    """
    missing = [key for key in expected if key not in state
               and not (optional_suffixes and key.endswith(optional_suffixes))]
    unexpected = [key for key in state if key not in expected]
    resized = [f'{key}: {tuple(state[key].shape)} vs {tuple(value.shape)}'
               for key, value in expected.items()
               if key in state and hasattr(state[key], 'shape')
               and tuple(state[key].shape) != tuple(value.shape)]
    return KeyMismatch(missing, unexpected, resized)


def check_state_dict(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], what: str,
                     fix: str,
                     optional_suffixes: Tuple[str, ...] = OPTIONAL_KEY_SUFFIXES) -> None:
    """Raise the mismatch report when ``state`` does not fit ``expected`` exactly.

    Args:
        state: The checkpoint's state dict, under the model's keys.
        expected: ``model.state_dict()``.
        what: The start of the message, naming the file and the model
            (``'checkpoint c.pth does not match the model of x.py (ImageClassifier)'``).
        fix: The end of the message: what to do instead.
        optional_suffixes: See :func:`compare_state_dicts`.

    Raises:
        CheckpointMismatchError: ``'{what}: missing keys: N (e.g. [...]); unexpected keys: ...;
            keys of another shape (checkpoint vs model): ... {fix}'``; also a ``KeyError``.
    """
    mismatch = compare_state_dicts(state, expected, optional_suffixes)
    if mismatch:
        raise CheckpointMismatchError(f'{what}: {mismatch.summary()}. {fix}')


# -- student checkpoints --------------------------------------------------------------------
def make_student_checkpoint(student_state: Mapping[str, torch.Tensor],
                            meta: Optional[Mapping[str, Any]] = None) -> dict:
    """The checkpoint of a student alone: the one layout of every student-only file.

    Args:
        student_state: The student's state dict, under the stock model's keys.
        meta: The run's ``meta``; its :data:`STUDENT_META_KEYS` are kept, as tensors and plain
            containers, with ``exported_from_distillation=True`` added.

    Returns:
        dict: ``{'meta': ..., 'state_dict': ...}`` with detached CPU tensors; loads with
        ``torch.load(weights_only=True)`` and strictly into the stock student model.
    """
    meta = {key: value for key, value in (meta or {}).items() if key in STUDENT_META_KEYS}
    meta = to_weights_only_safe(dict(meta, exported_from_distillation=True))
    state = OrderedDict((key, value.detach().cpu()) for key, value in student_state.items())
    return {'meta': meta, 'state_dict': state}


def student_checkpoint(checkpoint: Any) -> dict:
    """The student of a distillation checkpoint (mmkd's or MMRazor's) with the run's ``meta``,
    in the layout of :func:`make_student_checkpoint`."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return make_student_checkpoint(student_state_dict(state_dict_of(checkpoint)), meta)


def save_student_checkpoint(student_state: Mapping[str, torch.Tensor],
                            meta: Optional[Mapping[str, Any]], filename: str) -> str:
    """Write a student checkpoint (:func:`make_student_checkpoint`) atomically; the one writer
    of ``tools/export_student.py`` and ``StudentCheckpointHook``. Returns ``filename``."""
    return atomic_save(make_student_checkpoint(student_state, meta), filename)
