"""Recorders for what a module returns or receives."""
from typing import Any, List, Optional, Union

import torch.nn as nn

from mmkd.registry import TASK_UTILS
from mmkd.utils.misc import get_submodule
from .base_recorder import BaseRecorder


@TASK_UTILS.register_module()
class ModuleOutputsRecorder(BaseRecorder):
    """Records the output of module ``source`` (a forward hook), once per call.

    Examples:
        >>> import torch
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
        >>> recorder = ModuleOutputsRecorder(source='0')
        >>> recorder.prepare(model, 'student')
        >>> recorder.start()  # armed for one forward pass
        >>> logits = model(torch.ones(2, 4))
        >>> recorder.stop()
        >>> recorder.get_record_data().shape  # the Linear's output, (B, 3)
        torch.Size([2, 3])
        >>> recorder.remove()  # the hook is gone
    """

    def _attach(self, model: nn.Module) -> List[Any]:
        module = get_submodule(model, self.source, self.model_name)
        return [module.register_forward_hook(self._hook)]

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.armed:
            self.record(output)


@TASK_UTILS.register_module()
class ModuleInputsRecorder(BaseRecorder):
    """Records the input of module ``source`` (a forward pre-hook), once per call.

    Args:
        source: Module name.
        arg_index: Which positional argument to record; ``None`` records the whole tuple.
            Defaults to 0.
        clone: See :class:`BaseRecorder`. The module itself may modify its input in place (an
            inplace ReLU): the dry run then switches this recorder to cloning.

    Examples:
        >>> import torch
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Identity(), nn.ReLU())
        >>> recorder = ModuleInputsRecorder(source='1')  # what enters the ReLU
        >>> recorder.prepare(model, 'student')
        >>> recorder.start()
        >>> output = model(torch.tensor([[-1.0, 2.0]]))
        >>> recorder.stop()
        >>> recorder.get_record_data(), output
        (tensor([[-1.,  2.]]), tensor([[0., 2.]]))
        >>> recorder.remove()
    """

    def __init__(self, source: str, arg_index: Optional[int] = 0,
                 clone: Union[bool, str] = 'auto') -> None:
        super().__init__(source, clone)
        self.arg_index = arg_index

    def _attach(self, model: nn.Module) -> List[Any]:
        module = get_submodule(model, self.source, self.model_name)
        return [module.register_forward_pre_hook(self._hook)]

    def _hook(self, module: nn.Module, args: tuple) -> None:
        if self.armed:
            self.record(args if self.arg_index is None else args[self.arg_index])
