"""How mmkd reads and writes checkpoint files.

Reading (``torch.load`` defaults to ``weights_only=True``; see docs/checkpoints.md):

- **Teacher checkpoints** are often downloaded: they load with ``weights_only=True`` (tensors
  and plain containers only). A legacy file that pickles other objects is refused with an error
  that explains the choice; only ``trust_teacher_ckpt=True`` on the algorithm opts in to full
  unpickling. Trusted directories (below) never apply to a teacher: a downloaded teacher copied
  into a work dir stays as untrusted as it was.
- **Checkpoints a run writes itself** load with ``weights_only=True`` too (``SafeCheckpointHook``
  stores mmengine's message hub as tensors). An mmengine checkpoint written without that hook
  is fully unpickled only inside a directory registered with :func:`trust_checkpoint_dir`
  (``tools/train.py`` registers the run's work dir and an explicit ``--resume`` path) or listed
  in the environment variable ``MMKD_TRUSTED_CHECKPOINT_DIRS`` (``os.pathsep``-separated).
- A missing file raises :class:`~mmkd.utils.errors.UserFileNotFoundError`, a truncated or
  foreign file a :class:`~mmkd.utils.errors.CheckpointError`; both name the file's role
  (``'teacher checkpoint'``, ``'resume checkpoint'``...) and path. Files that mmengine loads
  (resume, ``load_from``) get their role from :func:`set_checkpoint_role`.

Writing: :func:`atomic_save` and :class:`AtomicLocalBackend` write to a temporary file in the
target's folder, flush and ``fsync`` it, then ``os.replace`` it onto the target, so a process
killed while saving leaves the previous file intact and never a partial one under the target's
name.

What the files hold is elsewhere: the keys of distillation, student and MMRazor checkpoints,
how the student is taken out and the one writer of student checkpoints in
:mod:`mmkd.models.algorithms.checkpoint_layout`; where a teacher checkpoint is loaded in
:mod:`mmkd.models.algorithms.teacher`; where a student is exported in :mod:`mmkd.apis.export`.
"""
import os
import os.path as osp
import pickle
import re
import secrets
import zipfile
from contextlib import contextmanager
from typing import IO, Any, Dict, Iterator, Optional, Set, Union

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .errors import CheckpointError, UserFileNotFoundError

TRUSTED_DIRS_ENV = 'MMKD_TRUSTED_CHECKPOINT_DIRS'
#: Name of :class:`AtomicLocalBackend` in mmengine's file backends (``backend_args``).
ATOMIC_BACKEND = 'mmkd_atomic_local'
#: Suffix of the temporary files of an atomic write (``.<name>.<pid>.<hex>.partial``).
PARTIAL_SUFFIX = '.partial'
_PARTIAL_NAME = re.compile(r'^\..+\.\d+\.[0-9a-f]{8}' + re.escape(PARTIAL_SUFFIX) + '$')
# The first bytes of a checkpoint in torch's legacy (pre-1.6, non-zip) format.
_LEGACY_HEAD = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'

_BUFFER_TAG = '__mmkd_history_buffer__'

_trusted_dirs: Set[str] = set()
_roles: Dict[str, str] = {}


class UntrustedCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint needs full unpickling but does not come from a trusted place."""


# -- trust and roles ------------------------------------------------------------------------
def _canonical(path: str) -> str:
    return osp.realpath(osp.abspath(osp.expanduser(path)))


def trust_checkpoint_dir(path: str) -> None:
    """Trust checkpoints inside ``path`` (a directory, or a file whose directory is trusted).

    Never applies to teacher checkpoints (see the module docstring)."""
    path = osp.abspath(osp.expanduser(path))
    _trusted_dirs.add(path if osp.isdir(path) or not osp.splitext(path)[1] else osp.dirname(path))


def is_trusted(filename: str) -> bool:
    """Whether ``filename`` lies inside a trusted directory."""
    filename = _canonical(filename)
    env_dirs = [d for d in os.environ.get(TRUSTED_DIRS_ENV, '').split(os.pathsep) if d]
    for directory in list(_trusted_dirs) + env_dirs:
        directory = _canonical(directory)
        if filename == directory or filename.startswith(directory + os.sep):
            return True
    return False


def set_checkpoint_role(filename: str, role: str) -> None:
    """Name what ``filename`` is (``'resume checkpoint'``) in the messages of the loads that
    mmengine makes through :func:`install_checkpoint_policy`."""
    _roles[_canonical(filename)] = role


def checkpoint_role(filename: str, default: str = 'checkpoint') -> str:
    """The role registered for ``filename`` with :func:`set_checkpoint_role`, or ``default``."""
    return _roles.get(_canonical(filename), default)


# -- reading --------------------------------------------------------------------------------
def _damage(filename: str, error: BaseException) -> Optional[str]:
    """Why ``filename`` cannot be a complete PyTorch checkpoint, or ``None`` when it looks like
    one (then ``error`` has another cause). Only called after ``torch.load`` failed."""
    if zipfile.is_zipfile(filename):
        try:
            with zipfile.ZipFile(filename) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return 'its zip archive is damaged'
        if not any(name == 'data.pkl' or name.endswith('/data.pkl') for name in names):
            return 'it is a zip archive without the data.pkl of a PyTorch checkpoint'
        return None
    with open(filename, 'rb') as file:
        head = file.read(len(_LEGACY_HEAD))
    if head != _LEGACY_HEAD:
        return 'it is neither a zip archive (torch.save) nor a legacy PyTorch file'
    if isinstance(error, EOFError) or 'EOF' in str(error):
        return 'it ends before its data does'
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _untrusted_message(filename: str, role: str, trust_dirs: bool,
                       trust_option: Optional[str], error: BaseException) -> str:
    message = (f'{role} {filename} holds pickled Python objects besides tensors; unpickling '
               'them can run arbitrary code, so mmkd refuses it (torch.load weights_only=True). ')
    options = []
    if trust_option:
        options.append(trust_option)
    if trust_dirs:
        options.append(f'add its directory to {TRUSTED_DIRS_ENV} or call '
                       'mmkd.utils.trust_checkpoint_dir()')
    else:
        message += ('Trusted directories (the work dir, a --resume folder, '
                    f'{TRUSTED_DIRS_ENV}) do not apply to a {role}. ')
    message += 'Fix, only if you trust its source: ' + '; or '.join(options) + '. '
    return message + f'Details: {_first_line(error)}'


def load_checkpoint_file(filename: str,
                         map_location: Any = 'cpu',
                         trusted: bool = False,
                         role: str = 'checkpoint',
                         trust_dirs: bool = True,
                         trust_option: Optional[str] = None) -> Any:
    """Load a checkpoint file under mmkd's policy.

    Args:
        filename: Path of the file.
        map_location: As for :func:`torch.load`.
        trusted: Allow full unpickling for this file.
        role: What the file is, for messages (``'teacher checkpoint'``).
        trust_dirs: Also allow full unpickling inside trusted directories (``False`` for
            teacher checkpoints).
        trust_option: The caller's own way to trust the file (``'set trust_teacher_ckpt=True
            ...'``), given in the message of an untrusted file.

    Returns:
        Whatever the file holds (usually a dict with ``state_dict``).

    Raises:
        UserFileNotFoundError: The file does not exist (the message names role and path).
        CheckpointError: The file is truncated or not a PyTorch checkpoint.
        UntrustedCheckpointError: The file needs full unpickling and is not trusted.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        what = 'is a directory, not a file' if osp.isdir(filename) else 'does not exist'
        raise UserFileNotFoundError(f'{role} {osp.abspath(filename)} {what}.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 (classified: damaged, untrusted or re-raised)
        damage = _damage(filename, error)
        if damage is not None:
            raise CheckpointError(
                f'{role} {filename} is truncated or not a PyTorch checkpoint: {damage} '
                f'({osp.getsize(filename)} bytes; torch.load: {_first_line(error)}). Fix: copy '
                'or download it again, or give another checkpoint (a run killed while saving '
                'keeps its previous one).') from error
        if not isinstance(error, pickle.UnpicklingError):
            raise
        if not (trusted or (trust_dirs and is_trusted(filename))):
            raise UntrustedCheckpointError(
                _untrusted_message(filename, role, trust_dirs, trust_option, error)) from error
    return torch.load(filename, map_location=map_location, weights_only=False)


def _load_from_local(filename: str, map_location: Any) -> Any:
    """mmengine's loader for local paths, under mmkd's policy."""
    return load_checkpoint_file(filename, map_location, role=checkpoint_role(filename))


def install_checkpoint_policy() -> None:
    """Make mmengine (``load_checkpoint``, ``Runner.resume``) load local files under mmkd's
    policy. Idempotent."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)


# -- writing --------------------------------------------------------------------------------
def to_weights_only_safe(value: Any) -> Any:
    """Replace what ``weights_only=True`` refuses: mmengine's ``HistoryBuffer`` becomes a
    tagged dict of tensors, numpy arrays become tensors and numpy scalars Python numbers."""
    if isinstance(value, HistoryBuffer):
        log, count = value.data
        return {_BUFFER_TAG: True, 'log': torch.from_numpy(np.asarray(log, dtype=np.float64)),
                'count': torch.from_numpy(np.asarray(count, dtype=np.float64)),
                'max_length': value.max_length}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: to_weights_only_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_weights_only_safe(item) for item in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


def from_weights_only_safe(value: Any) -> Any:
    """Undo :func:`to_weights_only_safe` for the history buffers."""
    if isinstance(value, dict) and value.get(_BUFFER_TAG):
        return HistoryBuffer(value['log'].numpy().tolist(), value['count'].numpy().tolist(),
                             value['max_length'])
    if isinstance(value, dict):
        return {key: from_weights_only_safe(item) for key, item in value.items()}
    return value


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable, where the platform allows it (not on Windows,
    nor on some network file systems: there the rename is atomic but not yet durable)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(filename: str, mode: str = 'wb') -> Iterator[IO]:
    """Open a temporary file next to ``filename`` for writing; on a clean exit flush and
    ``fsync`` it and ``os.replace`` it onto ``filename``; on an exception remove it.

    A process killed inside the ``with`` block leaves ``filename`` as it was (and a
    ``.<name>.<pid>.<hex>.partial`` file next to it).
    """
    filename = osp.abspath(osp.expanduser(filename))
    directory = osp.dirname(filename)
    os.makedirs(directory, exist_ok=True)
    temporary = osp.join(directory, f'.{osp.basename(filename)}.{os.getpid()}.'
                         f'{secrets.token_hex(4)}{PARTIAL_SUFFIX}')
    # os.open with 0o666 keeps the permissions a plain open() would give (umask applied).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, filename)
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_dir(directory)


def is_partial_file(name: str) -> bool:
    """Whether the file name ``name`` is that of a temporary file of :func:`atomic_open`
    (``.<name>.<pid>.<8 hex digits>.partial``), left behind by a process killed while writing."""
    return _PARTIAL_NAME.match(name) is not None


def atomic_save(obj: Any, filename: str) -> str:
    """``torch.save(obj, filename)``, atomically (see :func:`atomic_open`); returns the path."""
    with atomic_open(filename) as file:
        torch.save(obj, file)
    return filename


def atomic_write_bytes(data: Union[bytes, memoryview], filename: str) -> None:
    """Write ``data`` to ``filename`` atomically (see :func:`atomic_open`)."""
    with atomic_open(filename) as file:
        file.write(data)


def atomic_write_text(text: str, filename: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``filename`` atomically (see :func:`atomic_open`)."""
    atomic_write_bytes(text.encode(encoding), filename)


@register_backend(ATOMIC_BACKEND, force=True)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put``/``put_text`` write atomically.

    ``mmkd.AtomicCheckpointHook`` passes ``backend_args=dict(backend='mmkd_atomic_local')`` to
    ``Runner.save_checkpoint`` so that every checkpoint it writes (regular and best) appears
    complete or not at all.
    """

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write_bytes(obj, str(filepath))

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        atomic_write_text(obj, str(filepath), encoding)
