"""Save student-only checkpoints while a distillation trains.

The file's layout and its one writer live in :mod:`mmkd.models.algorithms.checkpoint_layout`;
``tools/export_student.py`` (:mod:`mmkd.apis.export`) writes the same files from a distillation
checkpoint after training.
"""
import os.path as osp
import time

import mmengine
from mmengine.hooks import Hook
from mmengine.utils import get_git_hash

from mmkd.models.algorithms.checkpoint_layout import save_student_checkpoint
from mmkd.registry import HOOKS
from mmkd.utils.dist import unwrap_model


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """Save student-only checkpoints (they load strictly into the stock student model) next to
    the run's own checkpoints.

    Writes ``student_epoch_{n}.pth`` (or ``student_iter_{n}.pth``) every ``interval`` and
    ``student_last.pth`` at the end of training, atomically and in the layout of
    ``tools/export_student.py``
    (:func:`~mmkd.models.algorithms.checkpoint_layout.save_student_checkpoint`): ``meta`` holds
    what the run's ``epoch_{n}.pth`` holds at the same point (epochs and iterations done, config,
    seed, experiment name, time, mmengine version, dataset meta), so this file and the export
    of that checkpoint carry the same ``meta`` keys.

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
        student = unwrap_model(runner.model).student
        save_student_checkpoint(student.state_dict(), self._run_meta(runner, epoch, iteration),
                                osp.join(runner.work_dir, filename))

    @staticmethod
    def _run_meta(runner, epoch: int, iteration: int) -> dict:
        """The ``meta`` that mmengine's ``Runner.save_checkpoint`` writes into the run's own
        checkpoint after ``epoch`` epochs and ``iteration`` iterations."""
        meta = dict(epoch=epoch, iter=iteration, cfg=runner.cfg.pretty_text, seed=runner.seed,
                    experiment_name=runner.experiment_name,
                    time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                    mmengine_version=mmengine.__version__ + get_git_hash())
        dataset = runner.train_dataloader.dataset
        if hasattr(dataset, 'metainfo'):
            meta['dataset_meta'] = dataset.metainfo
        return meta
