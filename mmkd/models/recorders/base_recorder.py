from typing import Any, Callable, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from mmkd.utils.errors import ConfigError, ConfigIndexError, ConfigRuntimeError


def _tensors_in(value: Any) -> List[torch.Tensor]:
    """All tensors in a (nested) tuple/list/dict value, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors_in(item)]
    return []


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A copy of a (nested) tuple/list/dict ``value`` whose tensors are replaced by ``fn``."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        mapped = [_map_tensors(item, fn) for item in value]
        return type(value)(mapped) if isinstance(value, list) else tuple(mapped)
    if isinstance(value, dict):
        return {key: _map_tensors(item, fn) for key, item in value.items()}
    return value


def _clone_tensors(value: Any) -> Any:
    """A copy of ``value`` whose tensors are cloned (autograd history kept)."""
    return _map_tensors(value, torch.Tensor.clone)


def _version(tensor: torch.Tensor) -> int:
    """The version counter; -1 for an inference tensor, which has none."""
    return -1 if tensor.is_inference() else tensor._version


class RecordedTensorChanged(ConfigRuntimeError):
    """A recorded tensor was modified in place after it was recorded."""


class BaseRecorder:
    """Records values produced inside a model during one forward pass.

    A recorder is *armed* only while its owner (:class:`RecorderManager`) runs the model's
    forward; calls outside that window are ignored — e.g. ``predict`` mode, or the re-run of a
    ``with_cp=True`` block during backward.

    Tensors are kept by reference together with their version counter (``clone='auto'``); reading
    a tensor that a later in-place op (``out += identity``, an inplace ReLU) modified raises
    :class:`RecordedTensorChanged` instead of returning wrong values. The algorithm's dry run
    switches recorders that see such a modification to cloning.

    Args:
        source: What to record, relative to the model (e.g. ``'backbone.layer3'``).
        clone: ``'auto'`` (reference, cloning once a modification is seen), ``True`` (always
            clone) or ``False`` (never; modifications still raise when read).

    Examples:
        The lifecycle (``prepare``, then ``start``/forward/``stop`` per pass, ``remove``) with a
        subclass; reading a tensor that an inplace ReLU changed after it was recorded raises:

        >>> import torch
        >>> import torch.nn as nn
        >>> from mmkd.models.recorders import ModuleOutputsRecorder
        >>> model = nn.Sequential(nn.Identity(), nn.ReLU(inplace=True))
        >>> recorder = ModuleOutputsRecorder(source='0')
        >>> recorder.prepare(model, 'teacher')
        >>> recorder.start()
        >>> output = model(torch.tensor([-1.0, 2.0]))
        >>> recorder.stop()
        >>> recorder.get_record_data()  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        RecordedTensorChanged: ... Set clone=True on this recorder.
        >>> recorder.clone = True  # what the algorithm's dry run switches on
        >>> recorder.start()
        >>> output = model(torch.tensor([-1.0, 2.0]))
        >>> recorder.stop()
        >>> recorder.get_record_data()
        tensor([-1.,  2.])
        >>> recorder.remove()
    """

    def __init__(self, source: str, clone: Union[bool, str] = 'auto') -> None:
        if clone not in (True, False, 'auto'):
            raise ConfigError(f"{type(self).__name__}: clone must be True, False or 'auto', "
                              f'got {clone!r}.')
        self.source = source
        self.clone = clone
        self.armed = False
        #: Calls the consumers of this recorder read; ``None`` while unknown.
        self.expected_calls: Optional[int] = None
        self.model_name = 'model'
        self._data: List[Tuple[Any, List[int]]] = []
        self._released = False  # the data was dropped after use (see release())
        self._handles: List[Any] = []
        self._on_record: Optional[Callable[[], None]] = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.model_name}: {self.source!r})'

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self, model: nn.Module, model_name: str = 'model',
                on_record: Optional[Callable[[], None]] = None) -> None:
        """Attach to ``model`` (register hooks or patch methods).

        Args:
            model: The model to record from.
            model_name: ``'student'`` or ``'teacher'``, for messages.
            on_record: Called after each record (the manager's completeness check).
        """
        self.model_name = model_name
        self._on_record = on_record
        self._handles = self._attach(model)

    def _attach(self, model: nn.Module) -> List[Any]:
        """Register what records; return objects with a ``remove()`` method."""
        raise NotImplementedError

    def remove(self) -> None:
        """Detach from the model: every hook and patch is removed."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._data = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def start(self) -> None:
        """Clear the previous forward's data and arm the recorder."""
        self._data = []
        self._released = False
        self.armed = True

    def stop(self) -> None:
        """Disarm the recorder at the end of the forward pass."""
        self.armed = False

    def map_records(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every recorded tensor by ``fn(tensor)`` (e.g. a cast after a teacher forward
        in another precision); the versions are those of the new tensors.

        Raises:
            RecordedTensorChanged: A recorded tensor was modified in place before the mapping
                (checked first, as reading the record would).
        """
        for value, versions in self._data:
            self._check_unchanged(value, versions)
        self._data = [(value, [_version(t) for t in _tensors_in(value)])
                      for value in (_map_tensors(value, fn) for value, _ in self._data)]

    def release(self) -> None:
        """Drop the recorded data once its consumers have read it (the distiller, after its
        losses), so that it is not kept alive through the backward pass and until the next
        forward."""
        self._data = []
        self._released = True

    # -- recording -------------------------------------------------------------------------
    def record(self, value: Any) -> None:
        """Store ``value`` (a tensor or a nested container of tensors)."""
        if self.clone is True:
            value = _clone_tensors(value)
        versions = [_version(t) for t in _tensors_in(value)]
        self._data.append((value, versions))
        if self._on_record is not None:
            self._on_record()

    @property
    def num_records(self) -> int:
        return len(self._data)

    @property
    def is_complete(self) -> bool:
        """Whether every call that the consumers read has been recorded."""
        return self.expected_calls is not None and len(self._data) >= self.expected_calls

    def modified_in_place(self) -> bool:
        """Whether a recorded tensor was modified in place after it was recorded."""
        return any(
            _version(t) != v for value, versions in self._data
            for t, v in zip(_tensors_in(value), versions))

    def get_record_data(self, data_idx: Optional[int] = None) -> Any:
        """The value recorded at call ``data_idx`` of the last forward pass.

        Args:
            data_idx: Which call of the source to return (0-based). ``None`` requires exactly
                one call.
        """
        if not self._data and self._released:
            raise RuntimeError(f'{self!r}: the data of the last forward pass was released after '
                               'the distiller\'s losses consumed it; read it before '
                               'compute_distill_losses().')
        if not self._data:
            raise ConfigRuntimeError(
                f'{self!r} recorded nothing in the last forward pass: the source did not run '
                '(was the forward stopped before it, or is it skipped in this mode?). Tap a '
                'module that runs in the training forward: tools/list_taps.py --modules lists '
                'them.')
        if data_idx is None:
            if len(self._data) > 1:
                raise ConfigRuntimeError(
                    f'{self!r} ran {len(self._data)} times in one forward pass; choose the call '
                    'with data_idx=<0..{}> in the loss mapping.'.format(len(self._data) - 1))
            data_idx = 0
        if not -len(self._data) <= data_idx < len(self._data):
            raise ConfigIndexError(f'{self!r}: data_idx={data_idx} but the source ran '
                                   f'{len(self._data)} time(s) in the last forward pass; set '
                                   f'data_idx to 0..{len(self._data) - 1} in the tap pair.')
        value, versions = self._data[data_idx]
        self._check_unchanged(value, versions)
        return value

    def _check_unchanged(self, value: Any, versions: List[int]) -> None:
        """Raise :class:`RecordedTensorChanged` when a tensor of ``value`` was modified in
        place since it was recorded (its version counter moved on)."""
        for tensor, version in zip(_tensors_in(value), versions):
            if _version(tensor) != version:
                raise RecordedTensorChanged(
                    f'{self!r}: the recorded tensor was modified in place after it was '
                    'recorded (e.g. by `out += identity` or an inplace ReLU), so it no longer '
                    'holds the recorded values. Set clone=True on this recorder.')
