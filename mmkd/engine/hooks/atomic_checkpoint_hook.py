"""Checkpoints that are complete or absent, never half-written, and never lost to a kill."""
import os
import os.path as osp
from typing import List, Set

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook

from mmkd.registry import HOOKS
from mmkd.utils.checkpoint import ATOMIC_BACKEND, atomic_write_text, is_partial_file


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` wait for :meth:`flush`, i.e. until the
    checkpoint that replaces the file is complete. Everything else goes to ``backend``."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.pending: List[str] = []

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def remove(self, filepath) -> None:
        self.pending.append(str(filepath))

    def rmtree(self, dir_path) -> None:
        self.pending.append(str(dir_path))

    def flush(self, keep: Set[str]) -> List[str]:
        """Remove the pending paths except those in ``keep`` (on the main process); return
        the paths removed."""
        pending, self.pending = self.pending, []
        removed = []
        for path in pending:
            if path in keep or not is_main_process():
                continue
            if self.backend.isfile(path):
                self.backend.remove(path)
            elif self.backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.backend.rmtree(path)
            else:
                continue
            removed.append(path)
        return removed


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) whose checkpoints survive a kill.

    mmengine's hook removes the oldest kept checkpoint (``max_keep_ckpts``) and the previous
    best one *before* it writes the new one, and writes in place: a run killed while saving
    with ``max_keep_ckpts=1`` keeps no checkpoint at all, and ``last_checkpoint`` names a
    deleted file. This hook, for an output folder on the local file system:

    1. writes every checkpoint (regular and best) to a temporary file in the same folder,
       flushes and ``fsync``\\ s it, and renames it onto its name
       (:class:`mmkd.utils.checkpoint.AtomicLocalBackend`);
    2. then rewrites ``<work_dir>/last_checkpoint`` the same way, so that it always names a
       complete file;
    3. only then removes the checkpoints that the new one replaces.

    Before training it removes the temporary files that a killed run left in the folder.
    Other storage backends (``backend_args``, ``file_client_args``, remote ``out_dir``) keep
    mmengine's behaviour, as does ``published_keys``. ``tools/train.py`` (through
    :func:`mmkd.apis.train.build_train_runner`) puts this hook in place of
    ``default_hooks.checkpoint`` of type ``CheckpointHook``, keeping its arguments.
    """

    def before_train(self, runner) -> None:
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        self.atomic = (self.file_client_args is None and self.backend_args is None
                       and isinstance(get_file_backend(out_dir), LocalBackend))
        if self.atomic:
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        self.file_backend = _DeferredRemoval(self.file_backend)
        if self.atomic and is_main_process():
            self._remove_partial_files(runner)

    def _remove_partial_files(self, runner) -> None:
        """Remove the temporary files of writes that a killed run left in ``out_dir``."""
        if not osp.isdir(self.out_dir):
            return
        for name in sorted(os.listdir(self.out_dir)):
            if is_partial_file(name):
                os.remove(osp.join(self.out_dir, name))
                runner.logger.info(f'Removed {name}: an incomplete checkpoint of a run that '
                                   'was killed while saving.')

    def _current_files(self) -> Set[str]:
        """The checkpoints that the message hub and ``last_checkpoint`` name."""
        files = {self.last_ckpt} if self.last_ckpt is not None else set()
        if getattr(self, 'best_ckpt_path', None):
            files.add(str(self.best_ckpt_path))
        files.update(str(path) for path in getattr(self, 'best_ckpt_path_dict', {}).values()
                     if path)
        return files

    def _remove_replaced(self, runner) -> None:
        for path in self.file_backend.flush(self._current_files()):
            runner.logger.info(f'Removed {path}: a newer checkpoint replaces it.')

    def _rotate(self, runner, step: int) -> None:
        """Keep ``max_keep_ckpts`` steps: record ``step`` and schedule the removal of the
        oldest kept step that it pushes out."""
        if self.max_keep_ckpts <= 0:
            return
        if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
            return  # the best checkpoint logic saves the same step again
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            dropped = self.keep_ckpt_ids.popleft()
            self.file_backend.remove(
                self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(dropped)))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        """Save the checkpoint of ``step``, then point ``last_checkpoint`` at it, then remove
        the checkpoints it replaces."""
        self._rotate(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if is_main_process():
            atomic_write_text(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        self._remove_replaced(runner)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's best-checkpoint logic; the previous best is removed once the new best
        (and the regular checkpoint that records it) is complete."""
        super()._save_best_checkpoint(runner, metrics)
        self._remove_replaced(runner)
