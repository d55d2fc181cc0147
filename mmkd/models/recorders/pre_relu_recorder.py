"""The tensor that enters the ReLU ending a block or stage, recorded correctly."""
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmkd.registry import TASK_UTILS
from mmkd.utils.errors import ConfigError, ConfigIndexError, ConfigRuntimeError
from mmkd.utils.misc import get_submodule
from .base_recorder import BaseRecorder, _version

POSITIONS = ('last_inside', 'first_after')
#: Class names of the activation modules that count as ReLUs: the default of
#: :class:`PreReLURecorder`, and what OFD's BN discovery and ``tools/list_taps.py`` look for.
ACTIVATION_TYPES = ('ReLU', 'ReLU6')


def _is_activation(module: nn.Module, activation_types: Sequence[str]) -> bool:
    return type(module).__name__ in activation_types


class _InplaceSwitch:
    """Turns ``inplace`` off on an activation module for one call and back on afterwards, so
    that the recorded input is not rectified in place. Costs the same memory as the block's
    non-inplace variant, and no copy."""

    def __init__(self) -> None:
        self.module: Optional[nn.Module] = None

    def switch_off(self, module: nn.Module) -> None:
        if getattr(module, 'inplace', False):
            module.inplace = False
            self.module = module

    def restore(self, module: nn.Module) -> None:
        if self.module is module:
            module.inplace = True
            self.module = None

    def restore_any(self) -> None:
        """Restore after a forward pass that stopped inside the intercepted call."""
        if self.module is not None:
            self.restore(self.module)


@TASK_UTILS.register_module()
class PreReLURecorder(BaseRecorder):
    """Records a block's or stage's output *before* its final activation.

    mmcv-style ResNet blocks (mmpretrain, mmdet, mmseg) end with ``out += identity`` followed by
    an inplace ReLU, often the same ``nn.ReLU`` module that already ran once or twice inside the
    block. A forward hook on the ReLU sees the rectified tensor, and a reference to ``out``
    changes under it. This recorder instead hooks every activation *module* and records:

    - ``position='last_inside'``: the input of the last activation call that runs inside
      ``source`` (e.g. ``backbone.layer3`` -> the stage's last block, after the residual add,
      before the ReLU). Which call is the last is learnt on the first forward pass, and only
      that call is intercepted afterwards.
    - ``position='first_after'``: the input of the first activation call that runs anywhere in
      the model after ``source`` returns (OFD's definition for blocks that end without an
      activation, e.g. pre-activation WRN blocks or MobileNetV2's linear bottlenecks).

    An inplace activation is switched to out-of-place for the intercepted call, so nothing is
    copied. Functional activations (``F.relu``) are not modules and are not seen.

    Args:
        source: Block or stage name, e.g. ``'backbone.layer3'`` or ``'backbone.layer3.5'``.
        position: ``'last_inside'`` or ``'first_after'``.
        activation_index: With ``'last_inside'``, which activation call inside ``source`` to
            take (0-based; negative counts from the end). Defaults to -1, the last one.
        activation_types: Class names of the activation modules. Defaults to
            :data:`ACTIVATION_TYPES` (``('ReLU', 'ReLU6')``).
        clone: See :class:`BaseRecorder`.

    Examples:
        A block that ends like an mmcv ResNet block: the same inplace ReLU inside the block and
        after the residual add.

        >>> import torch
        >>> import torch.nn as nn
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.relu = nn.ReLU(inplace=True)
        ...     def forward(self, x):
        ...         out = self.relu(x - 1)
        ...         out = out - x  # the "residual add"
        ...         return self.relu(out)
        >>> model = nn.Sequential(Block())
        >>> recorder = PreReLURecorder(source='0')
        >>> recorder.prepare(model, 'student')
        >>> recorder.start()
        >>> output = model(torch.tensor([[0.0, 3.0]]))
        >>> recorder.stop()
        >>> recorder.get_record_data(), output  # relu(x - 1) - x, then its ReLU
        (tensor([[ 0., -1.]]), tensor([[0., 0.]]))
        >>> recorder.remove()
    """

    def __init__(self,
                 source: str,
                 position: str = 'last_inside',
                 activation_index: int = -1,
                 activation_types: Sequence[str] = ACTIVATION_TYPES,
                 clone: Union[bool, str] = 'auto') -> None:
        super().__init__(source, clone)
        if position not in POSITIONS:
            raise ConfigError(f'PreReLURecorder: position must be one of {POSITIONS}, '
                              f'got {position!r}.')
        self.position = position
        self.activation_index = activation_index
        self.activation_types = tuple(activation_types)
        self._depth = 0
        self._switch = _InplaceSwitch()
        # 'last_inside': calls counted in the current visit of ``source``; the index to take,
        # learnt on the first visit; every input seen on that first visit.
        self._calls_inside = 0
        self._capture_index: Optional[int] = None
        self._calls_per_visit: Optional[int] = None
        self._candidates: List[Tuple[torch.Tensor, int]] = []
        # 'first_after': whether ``source`` has returned and the next activation is wanted.
        self._waiting = False

    def _attach(self, model: nn.Module) -> List[Any]:
        block = get_submodule(model, self.source, self.model_name)
        scope = block if self.position == 'last_inside' else model
        activations = [m for m in scope.modules() if _is_activation(m, self.activation_types)]
        if not activations:
            where = f'inside {self.source!r}' if self.position == 'last_inside' else 'in the model'
            hint = (" If the block ends without an activation, use position='first_after'."
                    if self.position == 'last_inside' else '')
            raise ConfigError(f'{self!r}: no activation module of types '
                              f'{self.activation_types} {where}.{hint} Set activation_types for '
                              'other activations.')
        handles = [block.register_forward_pre_hook(self._enter_block),
                   block.register_forward_hook(self._exit_block)]
        for activation in activations:
            handles.append(activation.register_forward_pre_hook(self._before_activation))
            handles.append(activation.register_forward_hook(self._after_activation))
        return handles

    def start(self) -> None:
        super().start()
        self._depth = 0
        self._waiting = False

    def stop(self) -> None:
        super().stop()
        self._switch.restore_any()
        self._waiting = False

    # -- block hooks ---------------------------------------------------------------------
    def _enter_block(self, module: nn.Module, args: tuple) -> None:
        if not self.armed:
            return
        self._depth += 1
        if self._depth == 1:
            self._calls_inside = 0
            self._candidates = []

    def _exit_block(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.armed or self._depth == 0:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        if self.position == 'first_after':
            self._waiting = True
            return
        self._record_last_inside()

    def _record_last_inside(self) -> None:
        calls = self._calls_inside
        if calls == 0:
            raise ConfigRuntimeError(
                f'{self!r}: no activation module ran inside {self.source!r}. If the block '
                "ends without an activation use position='first_after'; functional "
                'activations (F.relu) are not seen, record them with FunctionOutputsRecorder.')
        if self._capture_index is None:  # first visit: learn which call to take
            index = self.activation_index
            index = index if index >= 0 else calls + index
            if not 0 <= index < calls:
                raise ConfigIndexError(f'{self!r}: activation_index={self.activation_index} '
                                       f'but {calls} activation calls ran inside '
                                       f'{self.source!r}; set it to 0..{calls - 1} or -1.')
            self._capture_index, self._calls_per_visit = index, calls
            tensor, version = self._candidates[index]
            self._candidates = []
            if _version(tensor) != version:
                raise ConfigRuntimeError(f'{self!r}: the input of activation call {index} '
                                         f'inside {self.source!r} was modified in place before '
                                         'the block returned; record a smaller block.')
            self.record(tensor)
        elif calls != self._calls_per_visit:
            raise ConfigRuntimeError(
                f'{self!r}: {calls} activation calls ran inside {self.source!r} but '
                f'{self._calls_per_visit} on the first pass; the block\'s control flow changed, '
                'so the call to record is ambiguous. Record a smaller block.')
        # Otherwise the wanted call was recorded when it happened.

    # -- activation hooks ----------------------------------------------------------------
    def _before_activation(self, module: nn.Module, args: tuple) -> None:
        if not self.armed:
            return
        if self.position == 'first_after':
            if self._waiting:
                self._waiting = False
                self._switch.switch_off(module)
                self.record(args[0])
            return
        if self._depth == 0:
            return
        index = self._calls_inside
        self._calls_inside += 1
        if self._capture_index is None:
            self._switch.switch_off(module)
            self._candidates.append((args[0], _version(args[0])))
        elif index == self._capture_index:
            self._switch.switch_off(module)
            self.record(args[0])

    def _after_activation(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._switch.restore(module)
