from collections import OrderedDict

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor as MMEngineConstructor
from mmengine.optim import OptimWrapper

from mmkd.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmkd.utils.dist import unwrap_model


class _ModelWithoutTeacher(nn.Module):
    """A view of a distillation algorithm without its teacher: same children (so parameter
    names and ``paramwise_cfg`` keys are unchanged), minus ``teacher``."""

    def __init__(self, algorithm: nn.Module) -> None:
        super().__init__()
        self._parameters = algorithm._parameters
        self._modules = OrderedDict(
            (name, module) for name, module in algorithm._modules.items() if name != 'teacher')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DefaultOptimWrapperConstructor(MMEngineConstructor):
    """mmengine's default constructor, except that the teacher of a distillation algorithm
    gets no optimizer.

    Registered under mmengine's name in the ``mmkd`` scope, so every config with
    ``default_scope='mmkd'`` uses it without a ``constructor`` line; for other models it
    behaves exactly as mmengine's. (Other constructors, e.g. mmpretrain's layer-wise decay
    one, would still list the frozen teacher parameters, which never receive gradients.)
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = unwrap_model(model)
        if isinstance(getattr(model, 'teacher', None), nn.Module) and hasattr(model, 'distiller'):
            model = _ModelWithoutTeacher(model)
        return super().__call__(model)
