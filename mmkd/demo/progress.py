"""What the digits demo shows while it trains: one progress bar per model (rich), with its
epoch, training loss, latest validation top-1 and time left, while mmengine's logs stay in each
run's log file (``<work_dir>/<timestamp>/<timestamp>.log``).

    progress = TrainingProgress()
    with progress.track('kd') as track:
        runner = track.build(lambda: build_train_runner(cfg))
        runner.train()

The display only reads the runner (its message hub and validation metrics): seeds, data order
and results are those of a run without it.
"""
import contextlib
import datetime
import io
import logging
import sys
import warnings
from typing import Callable, Dict, Iterator, List, Optional, TextIO, Tuple, Type, Union

from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

METRIC = 'accuracy/top1'


class RunOutput(io.TextIOBase):
    """``sys.stdout`` during a quiet run: what the run prints goes to its log, line by line.

    mmengine's :class:`~mmengine.logging.MMLogger` binds its terminal handler to ``sys.stdout``
    as it is when the runner creates the logger, so the runner's own records arrive here too
    (its file handler has them already). Each line is passed on with the handler that wrote it
    (``None`` for a ``print``, e.g. mmengine's "Loads checkpoint" line), so that
    :class:`RunTrack` can tell them apart.

    Args:
        log: Called with each line written and the :class:`logging.StreamHandler` that wrote
            it, or ``None``.
    """

    def __init__(self, log: Callable[[str, Optional[logging.Handler]], None]):
        super().__init__()
        self.log = log
        self.partial = ''

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        caller = sys._getframe(1)
        if caller.f_code is logging.StreamHandler.emit.__code__:  # one whole record
            self.log(text.rstrip('\n'), caller.f_locals.get('self'))
            return len(text)
        *lines, self.partial = (self.partial + text).split('\n')
        for line in lines:
            if line.strip():
                self.log(line, None)
        return len(text)

    def close(self) -> None:
        """Pass on the last line if it has no line break."""
        if self.partial.strip():
            self.log(self.partial, None)
        self.partial = ''
        super().close()


def terminal_handlers(logger: logging.Logger) -> List[logging.StreamHandler]:
    """``logger``'s handlers that write to a stream rather than to a file."""
    return [handler for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)]


class ProgressHook(Hook):
    """Advances one task of a :class:`rich.progress.Progress` with the runner: every training
    iteration (the mean training loss of the epoch so far, the epoch) and every validation (its
    ``metric``).

    It reads the message hub and the metrics only; it neither draws random numbers nor changes
    the runner.

    Args:
        progress: The progress display.
        description: The task's name (the model).
        metric: The validation metric shown.
    """
    priority = 'LOWEST'

    def __init__(self, progress: Progress, description: str, metric: str = METRIC):
        self.progress = progress
        self.description = description
        self.metric = metric
        self.task = None

    def before_train(self, runner: Runner) -> None:
        self.task = self.progress.add_task(
            self.description, total=runner.max_epochs * len(runner.train_dataloader),
            completed=runner.iter, epoch=self.epoch(runner, runner.epoch), loss='', top1='')

    @staticmethod
    def epoch(runner: Runner, epoch: int) -> str:
        """``' 7/60'``: the epoch, as wide as the last one."""
        width = len(str(runner.max_epochs))
        return f'{epoch:>{width}}/{runner.max_epochs}'

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch=None,
                         outputs: Optional[Dict] = None) -> None:
        fields = dict(epoch=self.epoch(runner, runner.epoch + 1))
        if 'train/loss' in runner.message_hub.log_scalars:
            loss = runner.message_hub.get_scalar('train/loss').mean(batch_idx + 1)
            fields['loss'] = f'loss {loss:.3f}'
        self.progress.update(self.task, completed=runner.iter + 1, **fields)

    def after_val_epoch(self, runner: Runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if self.task is not None and metrics and self.metric in metrics:
            self.progress.update(self.task, top1=f'top-1 {metrics[self.metric]:.2f}')


def clock(seconds: float) -> str:
    """``'0:01:23'``."""
    return str(datetime.timedelta(seconds=int(seconds)))


class TimeColumn(ProgressColumn):
    """Time left while a task runs (estimated from its recent speed), the time it took once it
    is done."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text(f'took {clock(task.finished_time or task.elapsed or 0)}')
        if task.time_remaining is None:
            return Text('')
        return Text(f'{clock(task.time_remaining)} left')


class RunTrack:
    """One run on the display (see :meth:`TrainingProgress.track`).

    Args:
        progress: The run's progress display; ``None``: the run has no bar (an evaluation).
        description: The bar's name of the run.
        terminal: Where errors of the run's logger are printed; ``None``: mmengine's logs stay
            on the terminal (verbose).
    """

    def __init__(self, progress: Optional[Progress], description: str,
                 terminal: Optional[TextIO]):
        self.progress = progress
        self.description = description
        self.terminal = terminal
        self.output = RunOutput(self.log_output)
        self.logger: Optional[MMLogger] = None
        self.pending: List[Tuple[int, str, Optional[logging.Handler]]] = []

    def build(self, build_runner: Callable[[], Runner]) -> Runner:
        """Build the run's runner with ``build_runner`` and attach it to the display: the
        progress bar advances with its training, and (unless verbose) its logger prints only
        errors to the terminal while its log file keeps every record."""
        runner = build_runner()
        if self.terminal is not None:
            for handler in terminal_handlers(runner.logger):
                if handler.stream is self.output:
                    handler.setStream(self.terminal)
                    handler.setLevel(logging.ERROR)
        self.logger = runner.logger
        for level, text, handler in self.pending:
            if handler not in self.logger.handlers:  # the runner's records are in its file
                self.logger.log(level, text)
        self.pending.clear()
        if self.progress is not None:
            runner.register_hook(ProgressHook(self.progress, self.description))
        return runner

    def log(self, level: int, text: str, handler: Optional[logging.Handler] = None) -> None:
        """Log ``text`` with the run's logger (held until the runner is built); ``handler``:
        the handler that printed it, if any."""
        if self.logger is None:
            self.pending.append((level, text, handler))
        else:
            self.logger.log(level, text)

    def log_output(self, text: str, handler: Optional[logging.Handler]) -> None:
        """What the run printed (see :class:`RunOutput`)."""
        self.log(logging.INFO, text, handler)

    def log_warning(self, message: Union[Warning, str], category: Type[Warning], filename: str,
                    lineno: int, file: Optional[TextIO] = None,
                    line: Optional[str] = None) -> None:
        """``warnings.showwarning`` during the run: the warning goes to the run's log."""
        self.log(logging.WARNING,
                 warnings.formatwarning(message, category, filename, lineno, line).rstrip())


class TrainingProgress:
    """The demo's terminal: a line per message and a progress bar per run.

    Without ``verbose``, what every run logs (environment, config, a line per logging interval,
    validations), prints and warns goes to the run's log file only; its errors still reach the
    terminal. With ``verbose``, mmengine's logs are printed as ``tools/train.py`` prints them,
    above the bars.

    Args:
        verbose: Print mmengine's logs to the terminal too.
        console: Where the display goes; default: a console on ``sys.stdout`` (on a terminal,
            the bars are redrawn in place; elsewhere each bar is printed once, when its run
            ends).
    """

    def __init__(self, verbose: bool = False, console: Optional[Console] = None):
        self.verbose = verbose
        self.console = console or Console(file=sys.stdout)

    def message(self, text: str) -> None:
        """Print one line as it is (no markup, no wrapping)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def new_progress(self) -> Progress:
        return Progress(
            TextColumn('{task.description:<9}'), BarColumn(bar_width=20),
            TextColumn('epoch {task.fields[epoch]}'), TextColumn('{task.fields[loss]:<10}'),
            TextColumn('{task.fields[top1]:<11}'), TimeColumn(),
            console=self.console, refresh_per_second=4)

    @contextlib.contextmanager
    def track(self, description: str, bar: bool = True) -> Iterator[RunTrack]:
        """Show the run built and trained in the block (see :meth:`RunTrack.build`) as a
        progress bar named ``description`` that stays when the block ends; ``bar=False`` for a
        run that does not train."""
        with contextlib.ExitStack() as stack:
            progress = stack.enter_context(self.new_progress()) if bar else None
            if self.verbose:
                yield RunTrack(progress, description, terminal=None)
                return
            track = RunTrack(progress, description, terminal=sys.stdout)
            stack.enter_context(warnings.catch_warnings())
            warnings.showwarning = track.log_warning
            stack.callback(track.output.close)
            stack.enter_context(contextlib.redirect_stdout(track.output))
            yield track
