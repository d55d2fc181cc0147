"""Run a command-line tool so that a user mistake reads like a usage error.

    if __name__ == '__main__':
        run_cli(main)

A :class:`~mmkd.utils.errors.UserError` (also when it caused another error) is printed as one
message block, without a traceback, and the process exits with status 2. So is a mistake that
mmengine reports itself: a config ``type`` that is not in the registry. (Configs that cannot be
read are reported by :func:`mmkd.utils.config.read_config`.) ``--debug`` on the command line or
``MMKD_DEBUG=1`` in the environment lets the error through with its traceback. Any other
exception is an internal bug and keeps its traceback (exit status 1).

Under torchrun every process runs the tool; the block is printed by the first process of each
machine (``LOCAL_RANK`` 0, i.e. rank 0 on one machine), the others exit with status 2 silently.
"""
import argparse
import importlib
import os
import os.path as osp
import re
import sys
from types import TracebackType
from typing import Callable, Iterator, List, Optional

from mmengine.config import DictAction

from .errors import NameNotFoundError, UserError, UserFileNotFoundError, find_user_error
from .misc import did_you_mean

DEBUG_FLAG = '--debug'
DEBUG_ENV = 'MMKD_DEBUG'
USAGE_ERROR_STATUS = 2
EPILOG = (f'A mistake in the input (config, names, shapes, checkpoints, paths) ends in one '
          f'message and exit status {USAGE_ERROR_STATUS}; {DEBUG_FLAG} (or {DEBUG_ENV}=1) shows '
          'its traceback. A crash keeps its traceback and exits with status 1.')

# mmengine's builder re-raises errors as ``type(e)(f'class `X` in path/to/x.py: {e}')``.
_BUILDER_PREFIX = re.compile(r'^(class `[^`]+` in [^:]+\.py: )+')
# mmengine.registry.build_from_cfg's message for an unknown ``type``.
_NOT_REGISTERED = re.compile(
    r'^(?P<type>\S+) is not in the (?P<scope>\w+)::(?P<name>[\w ]+) registry\.')


def debug_requested(argv=None) -> bool:
    """Whether the user asked for tracebacks (``--debug`` or ``MMKD_DEBUG=1``)."""
    argv = sys.argv if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def add_debug_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """List ``--debug`` in ``parser``'s help and explain the exit statuses in its epilog.

    :func:`run_cli` removes ``--debug`` from ``sys.argv`` before the tool parses it; the
    argument is declared so that ``--help`` shows it and a direct call of ``main`` accepts it.
    """
    parser.add_argument(DEBUG_FLAG, action='store_true',
                        help=f'show the traceback of an input mistake (also {DEBUG_ENV}=1)')
    parser.epilog = f'{parser.epilog}\n\n{EPILOG}' if parser.epilog else EPILOG
    return parser


def add_runner_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments that ``tools/train.py`` and ``tools/test.py`` share: ``--cfg-options``,
    ``--launcher``, torchrun's ``--local-rank`` and ``--debug``.

    Call :func:`parse_runner_args` to parse them.

    Examples:
        >>> parser = add_runner_arguments(argparse.ArgumentParser())
        >>> args = parser.parse_args(['--cfg-options', 'train_cfg.max_epochs=2'])
        >>> args.cfg_options, args.launcher
        ({'train_cfg.max_epochs': 2}, 'none')
    """
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun passes --local-rank (torch >= 2.0) or --local_rank (older launchers).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return add_debug_argument(parser)


def parse_runner_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line of a tool built with :func:`add_runner_arguments`; the local rank
    goes to ``LOCAL_RANK`` (where mmengine reads it) unless torchrun set it already."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def missing_file_error(path: str, what: str) -> UserFileNotFoundError:
    """The error for a ``path`` that does not exist, naming ``what`` it is and the files of its
    folder that look like it."""
    folder = osp.dirname(osp.abspath(osp.expanduser(path)))
    if not osp.isdir(folder):
        hint = f' Its folder {folder} does not exist either.'
    else:
        hint = did_you_mean(osp.basename(path), sorted(os.listdir(folder)))
        hint = hint or f' Nothing in {folder} has a similar name.'
    return UserFileNotFoundError(f'{what} {path} does not exist.{hint} Check the path.')


def require_file(path: str, what: str) -> str:
    """``path`` if it is a file (or a URL, left to its loader); else a
    :class:`~mmkd.utils.errors.UserFileNotFoundError` naming ``what`` it is."""
    if '://' not in path and not osp.isfile(osp.expanduser(path)):
        raise missing_file_error(path, what)
    return path


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors that caused it (``__cause__``, else ``__context__``)."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _frame_files(traceback: Optional[TracebackType]) -> List[str]:
    """The source files of a traceback's frames, outermost first, with ``/`` separators."""
    files = []
    while traceback is not None:
        files.append(traceback.tb_frame.f_code.co_filename.replace(os.sep, '/'))
        traceback = traceback.tb_next
    return files


def unknown_type_error(error: BaseException) -> Optional[UserError]:
    """The user mistake behind ``error`` when mmengine's registry has no class of a config's
    ``type`` (a typo, or a missing ``custom_imports``); else ``None``."""
    for current in _chain(error):
        message = current.args[0] if isinstance(current, KeyError) and current.args else None
        match = _NOT_REGISTERED.match(message) if isinstance(message, str) else None
        files = _frame_files(current.__traceback__)
        if match and files and files[-1].endswith('/mmengine/registry/build_functions.py'):
            names = _registered_names(match.group('scope'), match.group('name'))
            first, _, rest = message.partition('. ')
            hint = did_you_mean(match.group('type'), names)
            return NameNotFoundError(f'{first}.{hint} {rest}'.strip())
    return None


def _registered_names(scope: str, name: str) -> List[str]:
    """The types that the registry ``name`` of package ``scope`` and its parents know."""
    from mmengine.registry import Registry
    try:
        module = importlib.import_module(f'{scope}.registry')
    except ImportError:
        return []
    for registry in vars(module).values():
        if isinstance(registry, Registry) and registry.name == name and registry.scope == scope:
            names = []
            while registry is not None:
                names += list(registry.module_dict)
                registry = registry.parent
            return names
    return []


def reports_errors() -> bool:
    """Whether this process prints user mistakes: not the second and later processes of a
    machine under torchrun (``LOCAL_RANK``) or slurm (``SLURM_LOCALID``)."""
    return all(os.environ.get(name, '0') == '0' for name in ('LOCAL_RANK', 'SLURM_LOCALID'))


def format_user_error(message: str, tool: str) -> str:
    """The block printed for a user mistake."""
    message = _BUILDER_PREFIX.sub('', message.strip())
    return (f'{tool}: error: {message}\n'
            f'(this is a problem with the input, not a crash; run with {DEBUG_FLAG} or '
            f'{DEBUG_ENV}=1 for the traceback)')


def user_error_message(error: UserError) -> str:
    """``error``'s message followed by its notes (``add_note``)."""
    return '\n'.join([str(error), *getattr(error, '__notes__', ())])


def run_cli(main: Callable[[], None]) -> None:
    """Call ``main()``; report user mistakes without a traceback and exit with status 2.

    ``--debug`` is removed from ``sys.argv`` before ``main`` parses it (and sets
    ``MMKD_DEBUG=1`` for child processes); tools declare it with :func:`add_debug_argument`
    only so that their ``--help`` lists it.
    """
    if DEBUG_FLAG in sys.argv:
        sys.argv = [arg for arg in sys.argv if arg != DEBUG_FLAG]
        os.environ[DEBUG_ENV] = '1'
    debug = debug_requested()
    try:
        main()
    except Exception as error:  # noqa: BLE001 (classified below, re-raised when not ours)
        user_error = find_user_error(error) or unknown_type_error(error)
        if user_error is None or debug:
            raise
        if reports_errors():
            tool = osp.basename(sys.argv[0]) or 'mmkd'
            print(format_user_error(user_error_message(user_error), tool), file=sys.stderr)
        sys.exit(USAGE_ERROR_STATUS)
