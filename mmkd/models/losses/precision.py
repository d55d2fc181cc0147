"""Losses reduce in float32, whatever the precision of their inputs.

Under mixed precision the student's features and logits arrive in float16 or bfloat16 (and a
frozen teacher's may stay in float32). Softmax/KL, Gram matrices and sums over whole feature
maps lose most of their digits in 16 bits (float16 overflows above 65504; bfloat16 keeps about
three significant digits), so every loss runs its body on float32 copies of its half-precision
inputs with autocast switched off, and returns a float32 scalar. Gradients flow back to the
inputs in their own dtype.
"""
import functools
from typing import Any, Callable, Optional, TypeVar

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)

Function = TypeVar('Function', bound=Callable[..., Any])


def to_float32(value: Any) -> Any:
    """A float32 copy of a half-precision tensor; anything else (float32/float64 tensors,
    integer labels, non-tensors) unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in HALF_DTYPES:
        return value.float()
    return value


def _device_type(args: tuple, kwargs: dict) -> Optional[str]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
    return None


def float32_reduction(function: Function) -> Function:
    """Decorate a loss's ``forward`` (or a loss function): run it on float32 copies of its
    half-precision tensor arguments, with autocast off on their device.

    The signature is kept (``functools.wraps``), so the distiller still checks the loss
    mappings against it.

    Args:
        function: A function or method whose tensor arguments may be float16/bfloat16.

    Returns:
        The wrapped function.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device_type = _device_type(args, kwargs)
        args = tuple(to_float32(value) for value in args)
        kwargs = {key: to_float32(value) for key, value in kwargs.items()}
        if device_type is None:
            return function(*args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
