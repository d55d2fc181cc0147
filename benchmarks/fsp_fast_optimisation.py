"""FSP's "fast optimisation" claim on digits: how many epochs of task training the student
needs to reach a given validation accuracy from FSP's initialisation (stage 2 of the two-stage
config) and from scratch (the baseline student, the same 60-epoch schedule).

    python benchmarks/fsp_fast_optimisation.py [--seeds 0 1 2] [--thresholds 50 70 80 90]
                                               [--work-dir work_dirs/fsp_fast_optimisation]
    python benchmarks/fsp_fast_optimisation.py --report work_dirs/.../accuracy_digits.json

Trains the baseline and the two-stage FSP student (validation after every epoch) with the
code of ``tools/digits_demo.py``, or reads the report of such a run, and prints a markdown
table: per threshold, the first epoch of task training at which each reached it (mean over
seeds, with the number of seeds that reached it at all).
"""
import argparse
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from mmkd.demo.digits import DIGITS_ENTRIES, mmkd_config_path, run_comparison
from mmkd.demo.report import write_report

Curve = List[Tuple[int, float]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='FSP initialisation vs training from scratch')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--thresholds', nargs='+', type=float, default=[50, 70, 80, 85, 90])
    parser.add_argument('--work-dir', default='work_dirs/fsp_fast_optimisation')
    parser.add_argument('--teacher-dir', default='work_dirs/digits_teacher')
    parser.add_argument('--report', help='analyse this accuracy_digits.json instead of training')
    return parser.parse_args()


def init_epochs_of_two_stage() -> int:
    """Stage 1's length in the shipped two-stage config (the epochs without task loss)."""
    cfg = Config.fromfile(mmkd_config_path(DIGITS_ENTRIES['fsp_two_stage'].config))
    return cfg.init_epochs


def first_epoch_reaching(curve: Curve, threshold: float, offset: int = 0) -> Optional[int]:
    """The first validated epoch (minus ``offset``) with top-1 >= ``threshold``; ``None`` if
    never reached."""
    for epoch, top1 in curve:
        if epoch > offset and top1 >= threshold:
            return epoch - offset
    return None


def epochs_to_thresholds(curves: Sequence[Curve], thresholds: Sequence[float],
                         offset: int = 0) -> Dict[float, Tuple[Optional[float], int]]:
    """threshold -> (mean first epoch over the curves that reach it, how many reach it)."""
    result = {}
    for threshold in thresholds:
        reached = [e for e in (first_epoch_reaching(c, threshold, offset) for c in curves)
                   if e is not None]
        result[threshold] = (statistics.fmean(reached) if reached else None, len(reached))
    return result


def format_table(runs: List[dict], thresholds: Sequence[float], init_epochs: int) -> str:
    rows = {'from scratch (baseline)': ('baseline', 0),
            f'from FSP initialisation ({init_epochs} FSP epochs)': ('fsp_two_stage',
                                                                   init_epochs)}
    lines = ['| task training | ' + ' | '.join(f'>= {t:g} %' for t in thresholds) +
             ' | final top-1 |', '|---|' + '---|' * (len(thresholds) + 1)]
    for label, (name, offset) in rows.items():
        selected = [run for run in runs if run['name'] == name]
        curves = [run['curve'] for run in selected]
        cells = []
        for mean, count in epochs_to_thresholds(curves, thresholds, offset).values():
            cell = '—' if mean is None else f'{mean:.1f}'
            cells.append(cell + (f' ({count}/{len(curves)})' if count < len(curves) else ''))
        final = statistics.fmean(run['top1'] for run in selected)
        lines.append(f'| {label} | ' + ' | '.join(cells) + f' | {final:.2f} |')
    seeds = sorted({run['seed'] for run in runs})
    lines += ['', f'First epoch of task training with validation top-1 at or above the '
              f'threshold, mean over seeds {seeds} ((k/n): only k seeds reached it). '
              'Both train the task with the same 60-epoch cosine schedule.']
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    if args.report:
        with open(args.report) as file:
            runs = json.load(file)['runs']
    else:
        comparison = run_comparison(['fsp_two_stage'], args.seeds, args.work_dir,
                                    args.teacher_dir, val_interval=1)
        json_path = write_report(comparison, args.work_dir, stem='accuracy_digits')[1]
        with open(json_path) as file:
            runs = json.load(file)['runs']
    table = format_table(runs, args.thresholds, init_epochs_of_two_stage())
    print(table)
    if not args.report:
        with open(osp.join(args.work_dir, 'fsp_fast_optimisation.md'), 'w') as file:
            file.write(table + '\n')


if __name__ == '__main__':
    main()
