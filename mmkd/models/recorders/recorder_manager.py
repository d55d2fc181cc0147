from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Union

import torch.nn as nn

from mmkd.registry import TASK_UTILS, build_component
from .base_recorder import BaseRecorder


class TapsComplete(Exception):
    """Raised inside a forward pass once every recorder has what its consumers read, to stop
    the model there (e.g. a detector's heads and NMS never run for backbone taps)."""


def build_recorder(cfg: Union[dict, BaseRecorder]) -> BaseRecorder:
    """Build a recorder; ``type`` may drop the ``Recorder`` suffix (``'PreReLU'``).

    Examples:
        >>> build_recorder(dict(type='PreReLU', source='backbone.layer3'))
        PreReLURecorder(model: 'backbone.layer3')
    """
    if isinstance(cfg, BaseRecorder):
        return cfg
    cfg = dict(cfg)
    kind = cfg.get('type')
    if isinstance(kind, str) and not kind.endswith('Recorder'):
        cfg['type'] = kind + 'Recorder'
    return build_component(TASK_UTILS, cfg)


class RecorderManager:
    """The named recorders of one model (the student's or the teacher's).

    Args:
        recorders: Name -> recorder config, e.g.
            ``dict(layer3=dict(type='PreReLU', source='backbone.layer3'))``.

    Examples:
        >>> import torch
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> manager = RecorderManager(dict(fc=dict(type='ModuleOutputs', source='0'),
        ...                                fc_in=dict(type='ModuleInputs', source='0')))
        >>> manager.prepare(model, 'student')
        >>> with manager.recording():  # arms every recorder for this forward pass
        ...     output = model(torch.ones(2, 4))
        >>> manager.get_record_data('fc').shape, manager.get_record_data('fc_in').shape
        (torch.Size([2, 3]), torch.Size([2, 4]))
        >>> manager.remove()
    """

    def __init__(self, recorders: Optional[Dict[str, Union[dict, BaseRecorder]]] = None) -> None:
        self.recorders: Dict[str, BaseRecorder] = {
            name: build_recorder(cfg) for name, cfg in (recorders or {}).items()}
        self._stop_when_complete = False

    def __contains__(self, name: str) -> bool:
        return name in self.recorders

    def __getitem__(self, name: str) -> BaseRecorder:
        return self.recorders[name]

    def __len__(self) -> int:
        return len(self.recorders)

    def prepare(self, model: nn.Module, model_name: str) -> None:
        """Attach every recorder to ``model``."""
        for recorder in self.recorders.values():
            recorder.prepare(model, model_name, on_record=self._check_complete)

    def remove(self) -> None:
        """Detach every recorder: all hooks and patches are removed."""
        for recorder in self.recorders.values():
            recorder.remove()

    @property
    def all_complete(self) -> bool:
        return all(r.is_complete for r in self.recorders.values())

    @property
    def can_stop_early(self) -> bool:
        """Whether completeness is known for every recorder (so a forward can stop there)."""
        return bool(self.recorders) and all(
            r.expected_calls is not None for r in self.recorders.values())

    def _check_complete(self) -> None:
        if self._stop_when_complete and self.all_complete:
            raise TapsComplete()

    @contextmanager
    def recording(self, stop_when_complete: bool = False,
                  ignore_errors_after_complete: bool = False) -> Iterator[None]:
        """Arm the recorders for one forward pass run inside the ``with`` block.

        Args:
            stop_when_complete: Stop the forward (raise and swallow :class:`TapsComplete`) as
                soon as every recorder is complete.
            ignore_errors_after_complete: Swallow an exception raised once every recorder is
                complete (the dry run: a detector's ``tensor`` mode may need data samples after
                the taps).
        """
        self._stop_when_complete = stop_when_complete and self.can_stop_early
        for recorder in self.recorders.values():
            recorder.start()
        try:
            yield
        except TapsComplete:
            pass
        except Exception:
            if not (ignore_errors_after_complete and self.can_stop_early and self.all_complete):
                raise
        finally:
            self._stop_when_complete = False
            for recorder in self.recorders.values():
                recorder.stop()

    def release(self) -> None:
        """Drop every recorder's data (see :meth:`BaseRecorder.release`)."""
        for recorder in self.recorders.values():
            recorder.release()

    def get_record_data(self, name: str, data_idx: Optional[int] = None) -> Any:
        return self.recorders[name].get_record_data(data_idx)
