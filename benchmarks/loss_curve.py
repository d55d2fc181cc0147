"""Every loss term of a distillation config, iteration by iteration, from random weights.

Trains the algorithm of a config as ``tools/gpu_check.py``'s ``train`` section does (a random
teacher given the BN statistics of the first batch, synthetic batches, SGD lr 0.01, momentum
0.9, weight decay 1e-4, no warm-up; synchronised BN reverted to BN, one process) and prints,
per iteration, the total loss, the sum of the distillation terms and each of the student's
own terms: to see which term moves first when a run's loss rises. ``--lr`` changes the learning rate, ``--distill-scale`` multiplies every
distillation loss weight (e.g. 1e-9: the student's own training with the distillation terms
still computed and printed, scaled)::

    python benchmarks/loss_curve.py configs/cwd/cwd_gfl_r101_r50_fpn_1x_coco.py --size 512
    python benchmarks/loss_curve.py configs/cwd/cwd_gfl_r101_r50_fpn_1x_coco.py --size 512 \\
        --lr 0.001
"""
import argparse
import copy
import inspect
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common as C  # noqa: E402

from mmengine.model import revert_sync_batchnorm  # noqa: E402

from mmkd.registry import MODELS  # noqa: E402


def default_loss_weight(loss_cfg: dict) -> float:
    """The ``loss_weight`` a loss config gets when it sets none: its class's default."""
    loss_class = MODELS.get(loss_cfg['type'])
    parameter = inspect.signature(loss_class.__init__).parameters.get('loss_weight')
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise SystemExit(f'--distill-scale: {loss_cfg["type"]} has no default loss_weight; '
                         'set loss_weight in the config.')
    return float(parameter.default)


def scale_distill_weights(model_cfg: dict, factor: float) -> None:
    """Multiply the ``loss_weight`` of every loss of the distiller's tap pairs and losses
    (the class's default where the config sets none)."""
    distiller = model_cfg['distiller']
    losses = [pair['loss'] for pair in distiller.get('tap_pairs', []) if 'loss' in pair]
    losses += list(distiller.get('distill_losses', {}).values())
    for loss in losses:
        weight = loss['loss_weight'] if 'loss_weight' in loss else default_loss_weight(loss)
        loss['loss_weight'] = weight * factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--size', type=C.parse_size, default=256)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--lr', type=float, default=C.OPTIMIZER['lr'])
    parser.add_argument('--distill-scale', type=float, default=1.0)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    device = C.setup(args.threads, 'cpu', False)
    C.OPTIMIZER['lr'] = args.lr
    model_cfg = C.load_model_cfg(osp.abspath(args.config))
    if args.distill_scale != 1.0:
        scale_distill_weights(model_cfg, args.distill_scale)
    model_cfg['teacher'] = C.random_teacher(model_cfg['teacher'])
    algorithm = C.build_mmkd_algorithm(model_cfg, None, args.size, device)
    algorithm = revert_sync_batchnorm(algorithm)  # one process, as the check and the Runner
    task = C.task_of(algorithm.student)
    batches = [C.make_batch(task, args.batch_size, args.size,
                            C.num_classes_of(algorithm.student, task), seed) for seed in range(2)]
    C.calibrate_teacher_bn(algorithm,
                           algorithm.data_preprocessor(copy.deepcopy(batches[0]), True))
    optim_wrapper = C.optim_wrapper_for(algorithm, False)
    print(f'command: python {" ".join(sys.argv)}\n{C.machine_info(device, False)}')
    for index in range(args.iters):
        log_vars = algorithm.train_step(copy.deepcopy(batches[index % 2]), optim_wrapper)
        values = {key: float(value.detach()) if hasattr(value, 'detach') else float(value)
                  for key, value in log_vars.items()}
        distill = sum(value for key, value in values.items()  # the distiller's loss terms
                      if 'loss' in key and key != 'loss' and not key.startswith('student.'))
        own = ', '.join(f'{key[len("student."):]} {value:.3f}' for key, value in values.items()
                        if key.startswith('student.'))
        print(f'{index:3d}: loss {values["loss"]:.3f}, distillation {distill:.4f}; {own}',
              flush=True)


if __name__ == '__main__':
    main()
