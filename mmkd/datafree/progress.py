"""A progress bar for image synthesis (rich), with images/s and the time left, and one log
line per batch for log files."""
import time
from typing import Optional

from mmengine.logging import print_log
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class SynthesisProgress:
    """Progress of a synthesis of ``num_images`` images, each optimised for ``num_steps``
    steps; advance with :meth:`step` after every step of a batch.

    Args:
        num_images: Images to synthesise.
        num_steps: Optimisation steps per image.
    """

    def __init__(self, num_images: int, num_steps: int) -> None:
        self.num_images, self.num_steps = num_images, max(num_steps, 1)
        self._progress = Progress(
            TextColumn('synthesising'), BarColumn(), MofNCompleteColumn(),
            TextColumn('images, {task.fields[rate]};'), TimeElapsedColumn(),
            TextColumn('elapsed,'), TimeRemainingColumn(), TextColumn('left'))
        self._task = self._progress.add_task('synthesis', total=num_images, rate='')
        self._start: Optional[float] = None
        self._done = 0.0

    def __enter__(self) -> 'SynthesisProgress':
        self._start = time.perf_counter()
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()
        if exc_info[0] is None:
            print_log(f'DeepInversionDataset: {self.num_images} images synthesised in '
                      f'{self.elapsed:.0f} s ({self.images_per_second:.1f} images/s, '
                      f'{self.num_steps} steps each).', logger='current')

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @property
    def images_per_second(self) -> float:
        return self._done / max(self.elapsed, 1e-9)

    def step(self, batch_size: int) -> None:
        """One optimisation step of a batch of ``batch_size`` images is done."""
        self._done += batch_size / self.num_steps
        self._progress.update(self._task, completed=self._done,
                              rate=f'{self.images_per_second:.1f} images/s')

    def batch_done(self, num_done: int) -> None:
        """The first ``num_done`` images are finished: a log line for log files."""
        self._done = float(num_done)
        left = (self.num_images - num_done) / max(self.images_per_second, 1e-9)
        print_log(f'DeepInversionDataset: {num_done}/{self.num_images} images, '
                  f'{self.images_per_second:.1f} images/s, {left:.0f} s left', logger='current')
