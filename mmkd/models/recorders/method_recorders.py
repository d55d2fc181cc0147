"""Recorders for what a method of one module, or a module-level function, returns."""
import functools
import importlib
from typing import Any, Callable, List

import torch.nn as nn

from mmkd.registry import TASK_UTILS
from mmkd.utils.errors import AttributeNotFoundError, ModuleImportError
from mmkd.utils.misc import did_you_mean, get_submodule
from .base_recorder import BaseRecorder


class _InstancePatch:
    """Replaces ``owner.name`` by ``wrapper`` on one object; ``remove()`` restores it."""

    def __init__(self, owner: Any, name: str, wrapper: Callable) -> None:
        self.owner, self.name = owner, name
        self.had_own_attr = name in vars(owner)
        self.previous = vars(owner).get(name)
        setattr(owner, name, wrapper)

    def remove(self) -> None:
        if self.had_own_attr:
            setattr(self.owner, self.name, self.previous)
        else:
            delattr(self.owner, self.name)


@TASK_UTILS.register_module()
class MethodOutputsRecorder(BaseRecorder):
    """Records what a method of one module of the model returns.

    ``source='head.pre_logits'`` wraps ``pre_logits`` of the model's ``head`` *instance* only, so
    the teacher and the student (same class) are recorded independently — unlike patching the
    class.

    Examples:
        >>> import torch
        >>> import torch.nn as nn
        >>> class Head(nn.Module):
        ...     def pre_logits(self, x):
        ...         return 2 * x
        ...     def forward(self, x):
        ...         return self.pre_logits(x) + 1
        >>> model = nn.Sequential(Head())
        >>> recorder = MethodOutputsRecorder(source='0.pre_logits')
        >>> recorder.prepare(model, 'teacher')
        >>> recorder.start()
        >>> output = model(torch.tensor([1.0, 2.0]))
        >>> recorder.stop()
        >>> recorder.get_record_data(), output
        (tensor([2., 4.]), tensor([3., 5.]))
        >>> recorder.remove()  # model[0].pre_logits is the class's method again
    """

    def _attach(self, model: nn.Module) -> List[Any]:
        module_name, _, method_name = self.source.rpartition('.')
        module = get_submodule(model, module_name, self.model_name)
        method = getattr(module, method_name, None)
        if not callable(method):
            methods = [n for n in dir(module) if not n.startswith('_')
                       and callable(getattr(module, n, None))]
            raise AttributeNotFoundError(
                f'{self.model_name}.{module_name or "<model>"} ({type(module).__name__}) has no '
                f'method {method_name!r}.{did_you_mean(method_name, methods)} Fix the source '
                f'{self.source!r} of this MethodOutputs recorder.')

        @functools.wraps(method)
        def recording_method(*args, **kwargs):
            output = method(*args, **kwargs)
            if self.armed:
                self.record(output)
            return output

        return [_InstancePatch(module, method_name, recording_method)]


class _FunctionPatch:
    """Wraps a module-level function; removal restores it, or disables the wrapper when
    another patch was stacked on top of it later."""

    def __init__(self, module: Any, name: str, on_call: Callable[[Any], None]) -> None:
        self.module, self.name = module, name
        self.original = getattr(module, name)
        self.active = True
        original = self.original

        @functools.wraps(original)
        def recording_function(*args, **kwargs):
            output = original(*args, **kwargs)
            if self.active:
                on_call(output)
            return output

        self.wrapper = recording_function
        setattr(module, name, recording_function)

    def remove(self) -> None:
        self.active = False
        if getattr(self.module, self.name) is self.wrapper:
            setattr(self.module, self.name, self.original)


@TASK_UTILS.register_module()
class FunctionOutputsRecorder(BaseRecorder):
    """Records what a module-level function returns, e.g.
    ``source='mmdet.models.utils.misc.multi_apply'``.

    The function is patched in its module, so only calls that look it up there at call time are
    seen (not ``from x import f`` copies made earlier). Calls are recorded only while this
    recorder's model runs its forward.

    Examples:
        >>> import torch
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Softmax(dim=1))  # calls torch.nn.functional.softmax
        >>> recorder = FunctionOutputsRecorder(source='torch.nn.functional.softmax')
        >>> recorder.prepare(model, 'student')
        >>> recorder.start()
        >>> output = model(torch.zeros(1, 2))
        >>> recorder.stop()
        >>> recorder.get_record_data()
        tensor([[0.5000, 0.5000]])
        >>> recorder.remove()  # torch.nn.functional.softmax is restored
    """

    def _attach(self, model: nn.Module) -> List[Any]:
        module_path, _, function_name = self.source.rpartition('.')
        try:
            module = importlib.import_module(module_path)
        except ImportError as error:
            raise ModuleImportError(f'FunctionOutputsRecorder: cannot import {module_path!r} '
                                    f'for source {self.source!r}: {error}. The source is '
                                    "'package.module.function'.") from error
        if not callable(getattr(module, function_name, None)):
            names = [n for n in dir(module) if callable(getattr(module, n, None))]
            raise AttributeNotFoundError(f'{module_path} has no function {function_name!r}.'
                                         f'{did_you_mean(function_name, names)} Fix the source '
                                         f'{self.source!r} of this FunctionOutputs recorder.')
        return [_FunctionPatch(module, function_name, self._on_call)]

    def _on_call(self, output: Any) -> None:
        if self.armed:
            self.record(output)
