"""Distributed runs under torchrun: DDP settings a distillation config needs, and the gloo
process group on machines without CUDA (mmengine 0.10.7 only sets up the GPU path itself).

On GPUs mmengine does the work: ``init_dist`` starts the NCCL group and the runner wraps the
model in ``MMDistributedDataParallel(device_ids=[LOCAL_RANK], broadcast_buffers=False)``. The
teacher is left out of that wrapper by the algorithm's ``_ddp_params_and_buffers_to_ignore``
(PyTorch's DDP reads it): its weights are not broadcast at start-up and not reduced.
"""
import os
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from .errors import ConfigRuntimeError

DDP_WRAPPER = 'MMDistributedDataParallel'


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside mmengine's DDP (or other registered) wrapper, or ``model`` itself.

    Hooks and tools reach the distillation algorithm through ``runner.model``, which is the
    wrapper under torchrun and the algorithm in a single process.

    Examples:
        >>> import torch.nn as nn
        >>> model = nn.Linear(2, 2)
        >>> unwrap_model(model) is model
        True
    """
    return model.module if is_model_wrapper(model) else model


def _type_name(cfg: dict) -> str:
    """The registered name of ``cfg['type']`` (a string, possibly scoped, or a class)."""
    kind = cfg.get('type', '')
    return str(getattr(kind, '__name__', kind)).rsplit('.', 1)[-1]


def unused_parameters_reason(cfg: Config) -> Optional[str]:
    """Why trainable parameters of ``cfg``'s model get no gradient in some iterations, or
    ``None`` when every one of them gets a gradient in every iteration.

    DDP then needs ``find_unused_parameters=True``; without it, the iteration after the first
    one that leaves a parameter out fails with "Expected to have finished reduction in the prior
    iteration".
    """
    hooks = cfg.get('custom_hooks') or []
    if any(_type_name(hook) == 'DistillSwitchHook' for hook in hooks):
        return ('DistillSwitchHook switches distillation off during training; from then on the '
                'connectors (and whatever only the distillation losses reach) get no gradient')
    model = cfg.get('model') or {}
    if model.get('calculate_student_loss', True) is False:
        return ("the model has calculate_student_loss=False; the student's parts after its "
                'last tap (e.g. its head) get no gradient')
    return None


def set_find_unused_parameters(cfg: Config) -> Optional[str]:
    """Turn on DDP's ``find_unused_parameters`` when :func:`unused_parameters_reason` gives a
    reason and the config does not choose (neither ``find_unused_parameters`` nor
    ``model_wrapper_cfg.find_unused_parameters`` is set).

    Returns:
        The reason when it was turned on, else ``None``.
    """
    wrapper = cfg.get('model_wrapper_cfg')
    if 'find_unused_parameters' in cfg or 'find_unused_parameters' in (wrapper or {}):
        return None
    if wrapper is not None and _type_name(wrapper) not in ('', DDP_WRAPPER):
        return None  # another wrapper (e.g. FSDP): its own options
    reason = unused_parameters_reason(cfg)
    if reason is None:
        return None
    cfg.find_unused_parameters = True  # read by mmengine's default wrapper (the GPU path)
    if wrapper is not None:
        cfg.model_wrapper_cfg = dict(wrapper, find_unused_parameters=True)
    if os.environ.get('RANK', '0') == '0':
        print_log(f'mmkd: DDP with find_unused_parameters=True, because {reason}. Set '
                  'find_unused_parameters in the config to choose yourself.', logger='current')
    return reason


def setup_distributed(cfg: Config) -> bool:
    """Prepare ``cfg`` for a torchrun launch (``launcher='pytorch'``); no-op without launcher.

    On every device, turns on ``find_unused_parameters`` where the config needs it
    (:func:`set_find_unused_parameters`). Without CUDA, mmengine's ``init_dist`` calls
    ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[local_rank]``; both fail.
    This then initialises the gloo process group first (mmengine skips its own) and configures
    the wrapper like mmengine's GPU default, on the CPU: ``device_ids=None``,
    ``broadcast_buffers=False``.

    Returns:
        bool: Whether the CPU path was taken.

    Raises:
        ConfigRuntimeError: A launcher is set but the process was not started by torchrun.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return False
    cpu = not torch.cuda.is_available()
    if 'RANK' not in os.environ and (cpu or launcher == 'pytorch'):
        raise ConfigRuntimeError(
            f'--launcher {launcher} is set but the RANK environment variable is not: start '
            'the run with tools/dist_train.sh (torchrun), or drop --launcher for one process.')
    set_find_unused_parameters(cfg)
    if not cpu:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    if _type_name(wrapper) == DDP_WRAPPER:
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


#: The name ``mmkd.apis`` imported before GPU runs were configured here too.
setup_cpu_distributed = setup_distributed


def close_process_group() -> None:
    """Destroy the default process group of a distributed run, if one was started.

    Called by ``tools/train.py`` and ``tools/test.py`` when the run ends. Left to interpreter
    shutdown, the process group's threads are torn down while the interpreter exits, which
    PyTorch warns about and which once ended a rank of a loaded 2-process gloo run with
    "terminate called without an active exception" (SIGABRT) after training had finished.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
