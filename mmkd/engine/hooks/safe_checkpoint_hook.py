"""Write checkpoints that load with ``torch.load(weights_only=True)``; the conversion itself is
:func:`mmkd.utils.checkpoint.to_weights_only_safe`."""
from mmengine.hooks import Hook

from mmkd.registry import HOOKS
from mmkd.utils.checkpoint import from_weights_only_safe, to_weights_only_safe


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Make the run's checkpoints loadable with ``torch.load(weights_only=True)``.

    mmengine pickles its message hub (``HistoryBuffer`` objects, numpy arrays and dtypes) into
    every checkpoint, which torch >= 2.6 refuses to load by default. This hook stores that part
    as tensors and plain containers before saving and restores it after loading, so resuming,
    ``tools/test.py`` and ``tools/export_student.py`` need no trust in the file.
    ``tools/train.py`` adds it to every run.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('meta', 'message_hub'):
            if key in checkpoint:
                checkpoint[key] = to_weights_only_safe(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = from_weights_only_safe(checkpoint['message_hub'])
