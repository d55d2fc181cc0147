"""Run a command-line tool so that a user mistake reads like a usage error.

    if __name__ == '__main__':
        run_cli(main)

A :class:`~mmkd.utils.errors.UserError` (also when it caused another error) is printed as one
message block, without a traceback, and the process exits with status 2. ``--debug`` on the
command line or ``MMKD_DEBUG=1`` in the environment lets the error through with its traceback.
Any other exception is an internal bug and keeps its traceback.
"""
import os
import re
import sys
from typing import Callable

from .errors import find_user_error

DEBUG_FLAG = '--debug'
DEBUG_ENV = 'MMKD_DEBUG'
USAGE_ERROR_STATUS = 2

# mmengine's builder re-raises errors as ``type(e)(f'class `X` in path/to/x.py: {e}')``.
_BUILDER_PREFIX = re.compile(r'^(class `[^`]+` in [^:]+\.py: )+')


def debug_requested(argv=None) -> bool:
    """Whether the user asked for tracebacks (``--debug`` or ``MMKD_DEBUG=1``)."""
    argv = sys.argv if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def format_user_error(message: str, tool: str) -> str:
    """The block printed for a user mistake."""
    message = _BUILDER_PREFIX.sub('', message.strip())
    return (f'{tool}: error: {message}\n'
            f'(this is a problem with the input, not a crash; run with {DEBUG_FLAG} or '
            f'{DEBUG_ENV}=1 for the traceback)')


def run_cli(main: Callable[[], None]) -> None:
    """Call ``main()``; report user mistakes without a traceback and exit with status 2.

    ``--debug`` is removed from ``sys.argv`` before ``main`` parses it (and sets
    ``MMKD_DEBUG=1`` for child processes), so tools need no argument of their own for it.
    """
    if DEBUG_FLAG in sys.argv:
        sys.argv = [arg for arg in sys.argv if arg != DEBUG_FLAG]
        os.environ[DEBUG_ENV] = '1'
    debug = debug_requested()
    try:
        main()
    except Exception as error:  # noqa: BLE001 (classified below, re-raised when not ours)
        user_error = find_user_error(error)
        if user_error is None or debug:
            raise
        tool = os.path.basename(sys.argv[0]) or 'mmkd'
        message = str(user_error)
        for note in getattr(user_error, '__notes__', ()):
            message += f'\n{note}'
        print(format_user_error(message, tool), file=sys.stderr)
        sys.exit(USAGE_ERROR_STATUS)
