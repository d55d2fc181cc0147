import torch
from mmengine.hooks import Hook

from mmkd.registry import HOOKS
from mmkd.utils.dist import unwrap_model
from mmkd.utils.errors import ConfigRuntimeError


@HOOKS.register_module()
class TeacherEvalHook(Hook):
    """Evaluate the teacher once on the validation set before training starts.

    The metrics are logged with a ``teacher/`` prefix and kept in the message hub
    (``runner.message_hub.get_info('teacher_metrics')``); validation hooks (best checkpoint,
    early stopping) are not called.
    """

    priority = 'LOW'

    def before_train(self, runner) -> None:
        if runner.val_loop is None:
            raise ConfigRuntimeError('TeacherEvalHook needs a val_dataloader and val_evaluator '
                                     '(and val_cfg) in the config; add them or remove the hook.')
        model = unwrap_model(runner.model)
        loop = runner.val_loop
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for data_batch in loop.dataloader:
                data = model.data_preprocessor(data_batch, False)
                outputs = model.teacher(**data, mode='predict')
                loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
        metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
        model.train(was_training)
        runner.message_hub.update_info('teacher_metrics', metrics)
        runner.logger.info('Teacher: ' + '  '.join(f'{k}: {v:.4f}' if isinstance(v, float)
                                                   else f'{k}: {v}' for k, v in metrics.items()))
