"""Where the method's own arithmetic (d) goes: connector conv, connector BN, margin, loss.

For a distillation config, (d) as ``step_overhead.py`` measures it (the distiller's connectors
and losses on features recorded in one step: forward, backward and the connectors' optimizer
step) is profiled with ``torch.profiler`` and every operator's self CPU time is put in one of:

- ``conv``: the connectors' convolutions (forward, and their ``ConvolutionBackward0``);
- ``bn``: the connectors' norm layers (forward, and their ``NativeBatchNormBackward0``);
- ``margin``: teacher connectors (OFD's margin ReLU: forward only, no graph);
- ``loss``: the losses' forward and the backward nodes of their arithmetic;
- ``optimizer``: the connectors' SGD step and ``zero_grad``;
- ``other``: the rest (the backward engine's own bookkeeping, the sum of the losses).

Forward operators are labelled by forward hooks on the modules that enter a
``record_function`` scope; backward operators by the autograd node that runs them.

``--eager-loss`` swaps OFD's loss for the eager formula it replaced (masked square, sum), so the
two can be compared in one command::

    python benchmarks/profile_method.py --preset ofd-cls ofd-det --threads 1
    python benchmarks/profile_method.py --preset ofd-det --compare-eager-loss
"""
import argparse
import copy
import os.path as osp
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn as nn
from torch.autograd.profiler import record_function

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common as C  # noqa: E402
from step_overhead import connector_loss_fn  # noqa: E402

from mmkd.models.connectors.ofd_connector import OFDTeacherConnector  # noqa: E402
from mmkd.models.losses.ofd_loss import OFDLoss  # noqa: E402

CATEGORIES = ('conv', 'bn', 'margin', 'loss', 'optimizer', 'other')
LABEL = 'mmkd::'
#: autograd node name prefix -> category (the rest of the backward nodes: ``loss``).
BACKWARD_NODES = {'Convolution': 'conv', 'NativeBatchNorm': 'bn', 'CudnnBatchNorm': 'bn'}


def _label_modules(distiller: nn.Module) -> List[object]:
    """Forward hooks that run each labelled module inside a ``record_function`` scope."""

    def scope(name: str) -> tuple:
        def enter(module, args):
            module._mmkd_scope = record_function(LABEL + name)
            module._mmkd_scope.__enter__()

        def leave(module, args, output):
            module._mmkd_scope.__exit__(None, None, None)
        return enter, leave

    labelled = []
    for module in distiller.connectors.values():
        if isinstance(module, OFDTeacherConnector):
            labelled.append((module, 'margin'))
            continue
        for sub in module.modules():
            if isinstance(sub, nn.modules.conv._ConvNd):
                labelled.append((sub, 'conv'))
            elif isinstance(sub, nn.modules.batchnorm._NormBase):
                labelled.append((sub, 'bn'))
    labelled += [(loss, 'loss') for loss in distiller.distill_losses.values()]
    handles = []
    for module, name in labelled:
        enter, leave = scope(name)
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _category(event) -> tuple:
    """(category, 'fwd' or 'bwd') of a profiler event, from its ancestors."""
    node = event
    while node is not None:
        name = node.name
        if name.startswith(LABEL):
            return name[len(LABEL):], 'fwd'
        if name.startswith('autograd::engine::evaluate_function: '):
            kind = name.split(': ', 1)[1]
            for prefix, category in BACKWARD_NODES.items():
                if kind.startswith(prefix):
                    return category, 'bwd'
            return ('other', 'bwd') if kind.startswith(('AddBackward', 'SumBackward')) \
                else ('loss', 'bwd')
        if name.startswith('Optimizer.') or 'zero_grad' in name:
            return 'optimizer', 'opt'
        node = node.cpu_parent
    return 'other', 'fwd'


def profile_categories(step: Callable[[int], None], index: int,
                       rounds: int) -> Dict[tuple, float]:
    """Self CPU ms of one call ``step(index)``, divided by ``rounds``, by (category, phase)."""
    from torch.profiler import ProfilerActivity, profile
    totals: Dict[tuple, float] = Counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(index)
    for event in prof.events():
        totals[_category(event)] += event.self_cpu_time_total / 1e3 / rounds
    return totals


def eager_ofd_forward(self: OFDLoss, student: torch.Tensor,
                      teacher: torch.Tensor) -> torch.Tensor:
    """OFDLoss's forward before the lean function: the eager masked square and sum."""
    teacher = teacher.detach()
    skip = (student <= teacher) & (teacher <= 0)
    distance = (teacher - student).pow(2).masked_fill(skip, 0.0)
    return self.loss_weight * distance.sum() / (student.shape[0] * self.divisor)


@contextmanager
def eager_ofd_loss(enabled: bool) -> Iterator[None]:
    """Within the block, OFDLoss computes the eager formula (when ``enabled``)."""
    if not enabled:
        yield
        return
    lean = OFDLoss.forward
    OFDLoss.forward = eager_ofd_forward
    try:
        yield
    finally:
        OFDLoss.forward = lean


def table(results: Dict[str, Dict[tuple, float]]) -> str:
    rows = ['| run | ' + ' | '.join(CATEGORIES) + ' | total (d) | all but conv |',
            '|---|' + '---|' * (len(CATEGORIES) + 2)]
    for name, totals in results.items():
        by_cat = {c: sum(v for (cat, _), v in totals.items() if cat == c) for c in CATEGORIES}
        total = sum(by_cat.values())
        cells = []
        for category in CATEGORIES:
            fwd = totals.get((category, 'fwd'), 0.0)
            bwd = totals.get((category, 'bwd'), 0.0)
            detail = f' ({fwd:.2f} + {bwd:.2f})' if category in ('conv', 'bn', 'loss') else ''
            cells.append(f'{by_cat[category]:.2f}{detail}')
        rows.append(f'| {name} | ' + ' | '.join(cells)
                    + f' | {total:.2f} | {total - by_cat["conv"]:.2f} |')
    return '\n'.join(rows)


def run_preset(name: str, args: argparse.Namespace, device: torch.device
               ) -> Dict[str, Dict[tuple, float]]:
    config, size, batch_size, _ = C.PRESETS[name]
    size, batch_size = args.size or size, args.batch_size or batch_size
    model_cfg = C.load_model_cfg(osp.join(C.REPO, config))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = C.save_random_checkpoint(model_cfg['teacher'], osp.join(tmp, 'teacher.pth'))
        algorithm = C.build_mmkd_algorithm(model_cfg, ckpt, size, device)
    task = C.task_of(algorithm.student)
    batches = [C.make_batch(task, batch_size, size, C.num_classes_of(algorithm.student, task),
                            seed) for seed in range(2)]
    C.calibrate_teacher_bn(algorithm, algorithm.data_preprocessor(copy.deepcopy(batches[0]),
                                                                  True))
    step_c = C.train_step_fn(algorithm, C.optim_wrapper_for(algorithm, False), batches)
    step_d = connector_loss_fn(algorithm, device, False, step_c)
    handles = _label_modules(algorithm.distiller)
    variants = {'eager loss': True, 'lean loss': False} if args.compare_eager_loss \
        else {'': False}
    results = {f'{name}, {variant}' if variant else name: Counter() for variant in variants}
    try:
        for index in range(args.warmup + args.rounds):  # the variants in alternation
            for (variant, eager), label in zip(variants.items(), results):
                with eager_ofd_loss(eager):
                    if index < args.warmup:
                        step_d(index)
                    else:
                        results[label].update(profile_categories(step_d, index, args.rounds))
    finally:
        for handle in handles:
            handle.remove()
        algorithm.remove_recorders()
    print(f'\n{name} ({C.size_text(size)}, batch {batch_size}): self CPU ms per (d) call, '
          'forward + backward in brackets')
    print(table(results), flush=True)
    return results


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', nargs='+', default=['ofd-cls', 'ofd-det'],
                        choices=sorted(C.PRESETS))
    parser.add_argument('--size', type=C.parse_size)
    parser.add_argument('--batch-size', type=int)
    parser.add_argument('--rounds', type=int, default=10, help='profiled calls')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--compare-eager-loss', action='store_true',
                        help='also profile the eager OFD formula the lean loss replaced')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[tuple, float]]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = C.setup(args.threads, 'cpu', False)
    print(f'command: {" ".join([osp.basename(sys.executable), __file__, *argv])}')
    print(C.machine_info(device, False))
    results = {}
    for name in args.preset:
        results.update(run_preset(name, args, device))
    print('\n' + C.machine_info(device, False))
    print(table(results))
    return results


if __name__ == '__main__':
    main()
