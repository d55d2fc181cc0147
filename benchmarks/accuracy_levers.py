"""Digits accuracy with and without the opt-in teacher levers, seeds paired.

For each distillation config and seed, trains the student twice from the same seed: with the
config as it is, and with the levers' algorithm options (default: ``teacher_dtype='bf16'``,
``memory_format='channels_last'``, ``teacher_inference_mode=True``), and prints the top-1 of
both and their paired difference (mean and standard deviation over the seeds)::

    python benchmarks/accuracy_levers.py [--methods ofd kd] [--seeds 0 1 2 3 4]

The teacher is the digits demo's (trained once, cached in ``work_dirs/digits_teacher``).
"""
import argparse
import os.path as osp
import statistics
import sys
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common as C  # noqa: E402,F401  (puts the repository first on the path)

from mmkd.demo.digits import (DIGITS_ENTRIES, digits_config, prepare_teacher,  # noqa: E402
                              train_run)
from mmkd.utils import register_all_modules  # noqa: E402

LEVERS = dict(teacher_dtype='bf16', memory_format='channels_last', teacher_inference_mode=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--methods', nargs='+', default=['ofd', 'kd'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--work-dir', default='work_dirs/accuracy_levers')
    parser.add_argument('--teacher-dir', default='work_dirs/digits_teacher')
    return parser.parse_args()


def main() -> Dict[str, List[tuple]]:
    args = parse_args()
    register_all_modules(init_default_scope=False)
    teacher = prepare_teacher(args.teacher_dir)
    results: Dict[str, List[tuple]] = {}
    for method in args.methods:
        config = DIGITS_ENTRIES[method].config
        for seed in args.seeds:
            top1 = []
            for variant, options in (('default', {}), ('levers', LEVERS)):
                cfg = digits_config(config, seed=seed, teacher_ckpt=teacher.checkpoint)
                cfg.model.update(options)
                work_dir = osp.join(args.work_dir, method, variant, f'seed{seed}')
                top1.append(train_run(method, config, cfg, work_dir).top1)
            results.setdefault(method, []).append((seed, *top1))
            print(f'{method} seed {seed}: default {top1[0]:.2f}, levers {top1[1]:.2f}',
                  flush=True)
    print(f'\nlevers: {LEVERS}; teacher top-1 {teacher.top1:.2f}')
    print('| method | seed | default top-1 | levers top-1 | difference |\n|---|---|---|---|---|')
    for method, rows in results.items():
        for seed, default, levers in rows:
            print(f'| {method} | {seed} | {default:.2f} | {levers:.2f} | {levers - default:+.2f} |')
        diffs = [levers - default for _, default, levers in rows]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        print(f'| {method} | mean | {statistics.mean(r[1] for r in rows):.2f} | '
              f'{statistics.mean(r[2] for r in rows):.2f} | '
              f'{statistics.mean(diffs):+.2f} ± {spread:.2f} |')
    return results


if __name__ == '__main__':
    main()
