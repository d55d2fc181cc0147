"""Save student-only checkpoints while a distillation trains."""
import os.path as osp
import time

from mmengine.hooks import Hook

from mmkd.apis.export import make_student_checkpoint
from mmkd.registry import HOOKS
from mmkd.utils.checkpoint import atomic_save
from mmkd.utils.dist import unwrap_model


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """Save student-only checkpoints (they load strictly into the stock student model) next to
    the run's own checkpoints.

    Writes ``student_epoch_{n}.pth`` (or ``student_iter_{n}.pth``) every ``interval`` and
    ``student_last.pth`` at the end of training, atomically and in the layout of
    ``tools/export_student.py`` (:func:`mmkd.apis.export.make_student_checkpoint`); ``meta``
    counts the epochs and iterations done, as the run's ``epoch_{n}.pth`` does.

    Args:
        interval: Save every ``interval`` epochs/iterations; ``0`` saves only at the end.
        by_epoch: Count epochs (default) or iterations.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1, by_epoch: bool = True) -> None:
        self.interval = interval
        self.by_epoch = by_epoch

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if not hasattr(model, 'student'):
            raise TypeError(f'StudentCheckpointHook saves the student of a distillation '
                            f'algorithm, but the model is a {type(model).__name__}; remove the '
                            'hook (the normal checkpoints already hold this model alone).')

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.interval and self.every_n_epochs(runner, self.interval):
            self._save(runner, f'student_epoch_{runner.epoch + 1}.pth', runner.epoch + 1,
                       runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.interval and self.every_n_train_iters(runner, self.interval):
            self._save(runner, f'student_iter_{runner.iter + 1}.pth', runner.epoch,
                       runner.iter + 1)

    def after_train(self, runner) -> None:
        self._save(runner, 'student_last.pth', runner.epoch, runner.iter)

    def _save(self, runner, filename: str, epoch: int, iteration: int) -> None:
        """Write the student after ``epoch`` epochs and ``iteration`` iterations."""
        if runner.rank != 0:
            return
        model = unwrap_model(runner.model)
        dataset = runner.train_dataloader.dataset
        meta = dict(epoch=epoch, iter=iteration, seed=runner.seed,
                    experiment_name=runner.experiment_name,
                    time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                    dataset_meta=getattr(dataset, 'metainfo', None))
        atomic_save(make_student_checkpoint(model.student.state_dict(), meta),
                    osp.join(runner.work_dir, filename))
