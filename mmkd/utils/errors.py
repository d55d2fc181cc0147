"""User mistakes, told apart from internal bugs.

A *user mistake* is a wrong config, name, shape, checkpoint or path: something the user fixes
without reading mmkd's code. mmkd raises it as a :class:`UserError` whose message names the
problem, the file or key, and the fix. The tools (``tools/*.py``, through
:func:`mmkd.utils.cli.run_cli`) print such a message alone and exit with status 2, the way
argparse and git report usage errors; ``--debug`` or ``MMKD_DEBUG=1`` shows the traceback.
Anything else is a bug and keeps its traceback.

Each class also derives from the built-in exception that the same mistake raised before
(``KeyError``, ``ValueError``, ...), so ``except KeyError`` in user code keeps working.

Examples:
    >>> error = NameNotFoundError("student has no module named 'backbone.layer5'.")
    >>> isinstance(error, KeyError), isinstance(error, UserError)
    (True, True)
    >>> print(error)  # without KeyError's quotes
    student has no module named 'backbone.layer5'.
"""
from typing import Optional


class UserError(Exception):
    """Base class of the mistakes a user fixes in a config, a command line or a file.

    Every subclass takes one message argument (mmengine's builder re-raises errors as
    ``type(error)(message)``, so a second required argument would turn the error into a
    ``TypeError``).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


class ConfigError(UserError, ValueError):
    """A config entry has a wrong value, type or combination."""


class NameNotFoundError(UserError, KeyError):
    """A name (module, tap, registry type, config key) does not exist.

    Unlike a plain ``KeyError`` its message prints without quotes around it.
    """


class ShapeMismatchError(UserError, ValueError):
    """Two tensors that a loss or connector combines do not fit together."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, truncated, corrupt, untrusted or does not match a model."""


class CheckpointMismatchError(CheckpointError, KeyError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A path given by the user (config, checkpoint, output) does not exist."""


class ConfigKeyError(ConfigError, KeyError):
    """A config entry lacks a required key or gives one name twice."""


class ConfigTypeError(ConfigError, TypeError):
    """A config entry has the wrong type (a string where a dict is expected, a wrong head)."""


class ConfigIndexError(ConfigError, IndexError):
    """An index in a config (``data_idx``, ``activation_index``) is out of range."""


class ConfigRuntimeError(ConfigError, RuntimeError):
    """A config that builds asks for what the run cannot do (a tapped module that never runs,
    a hook the method needs is missing, ``--launcher pytorch`` without torchrun)."""


class AttributeNotFoundError(NameNotFoundError, AttributeError):
    """A config names a method or function that its module or object does not have."""


class ModuleImportError(ConfigError, ImportError):
    """A module named in a config (e.g. ``FunctionOutputs``'s source) cannot be imported."""


class UserFileExistsError(UserError, FileExistsError):
    """An output path given by the user already exists (or is one of the inputs)."""


def find_user_error(error: BaseException) -> Optional[UserError]:
    """The :class:`UserError` that caused ``error`` (itself, or one in its ``__cause__`` /
    ``__context__`` chain), or ``None`` when ``error`` is an internal bug."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
