"""Build-time checks of the losses' weights and hyper-parameters.

Every loss checks its arguments in ``__init__`` with these helpers, so a wrong value fails when
the config is built instead of training with a negative, zero or NaN loss. Each raises a
:class:`~mmkd.utils.errors.ConfigError` naming the loss, the argument, the value and the fix.

Examples:
    >>> check_loss_weight('KDLoss', 2.0)
    2.0
    >>> check_positive('KDLoss', 'tau', 0, fix='the softmax temperature, e.g. tau=4')
    Traceback (most recent call last):
        ...
    mmkd.utils.errors.ConfigError: KDLoss: tau must be a finite number > 0, got 0. Fix: ...
"""
import math
import numbers
from typing import Any, Sequence

from mmkd.utils.errors import ConfigError


def _owner_name(owner: Any) -> str:
    return owner if isinstance(owner, str) else type(owner).__name__


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fail(owner: Any, name: str, value: Any, rule: str, fix: str) -> ConfigError:
    return ConfigError(f'{_owner_name(owner)}: {name} must be {rule}, got {value!r}. '
                       f'Fix: set {name} to {fix}.')


def check_number(owner: Any, name: str, value: Any, low: float = -math.inf,
                 high: float = math.inf, low_open: bool = False, high_open: bool = False,
                 fix: str = 'a valid value') -> Any:
    """Check that ``value`` is a finite real number in the interval from ``low`` to ``high``.

    Args:
        owner: The loss (or its class name) for the message.
        name: The argument's name.
        value: The value given.
        low: Lower bound.
        high: Upper bound.
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.
        fix: What the value should be, completing ``"Fix: set <name> to ..."``.

    Returns:
        The value, unchanged.

    Raises:
        ConfigError: When the value is not a number, not finite or out of the interval.
    """
    interval = (('(' if low_open else '[') + f'{low:g}, {high:g}' + (')' if high_open else ']'))
    rule = f'a finite number in {interval}'
    if low == 0 and high == math.inf:
        rule = 'a finite number ' + ('> 0' if low_open else '>= 0')
    if not _is_real(value) or not math.isfinite(value):
        raise _fail(owner, name, value, rule, fix)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        raise _fail(owner, name, value, rule, fix)
    return value


def check_positive(owner: Any, name: str, value: Any, fix: str) -> Any:
    """Check that ``value`` is a finite number ``> 0`` (a temperature, a divisor).

    Returns:
        The value, unchanged.
    """
    return check_number(owner, name, value, low=0, low_open=True, fix=fix)


def check_non_negative(owner: Any, name: str, value: Any, fix: str) -> Any:
    """Check that ``value`` is a finite number ``>= 0`` (a term's weight where 0 switches a
    documented part off, a margin, a standard deviation).

    Returns:
        The value, unchanged.
    """
    return check_number(owner, name, value, low=0, fix=fix)


def check_count(owner: Any, name: str, value: Any, minimum: int, fix: str) -> int:
    """Check that ``value`` is an integer ``>= minimum`` (a number of views).

    Returns:
        The value, unchanged.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise _fail(owner, name, value, f'an integer >= {minimum}', fix)
    return value


def check_choice(owner: Any, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Check that ``value`` is one of ``choices``.

    Returns:
        The value, unchanged.
    """
    if value not in choices:
        options = ', '.join(repr(c) for c in choices)
        raise _fail(owner, name, value, f'one of {options}', f'one of {options}')
    return value


def check_loss_weight(owner: Any, loss_weight: Any, name: str = 'loss_weight') -> Any:
    """Check a loss's weight in the total loss: a finite number ``> 0``.

    A negative weight makes the optimiser maximise the loss; a NaN or infinite weight makes
    every step NaN; a zero weight is a typo or a switched-off loss that still costs its
    forward (and the teacher's) at every step, so it is refused too: remove the loss instead.

    Args:
        owner: The loss (or its class name) for the message.
        loss_weight: The weight given.
        name: The argument's name. Defaults to ``'loss_weight'``.

    Returns:
        The weight, unchanged.

    Raises:
        ConfigError: Naming the loss, the value and the fix.
    """
    loss = _owner_name(owner)
    if _is_real(loss_weight) and loss_weight == 0:
        raise ConfigError(
            f'{loss}: {name}=0 switches the loss off but it is still computed at every step '
            '(and the teacher still runs to its taps). Fix: remove the loss (its tap_pairs '
            f'entry, or its distill_losses and loss_forward_mappings entries) from the '
            f'distiller config, or give {name} a value > 0.')
    if _is_real(loss_weight) and loss_weight < 0:
        raise ConfigError(
            f'{loss}: {name} must be > 0, got {loss_weight!r}: a negative weight makes the '
            f'optimiser maximise the loss. Fix: set {name}={-loss_weight!r} (or the weight '
            'you meant).')
    return check_number(owner, name, loss_weight, low=0, low_open=True,
                        fix='the weight of this loss in the total loss, e.g. 1.0')
