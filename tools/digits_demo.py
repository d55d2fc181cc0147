"""Distillation end to end on real data in a few minutes on a CPU: scikit-learn's handwritten
digits, a ResNet-18 teacher (width 32, full training split) and a thin ResNet-18 student
(width 4, 20 images per class), trained alone and with each distillation method.

    python tools/digits_demo.py [--methods kd fitnets] [--seeds 0 1 2] [--epochs N]
                                [--work-dir work_dirs/digits_demo] [--verbose]

The teacher is trained once into ``work_dirs/digits_teacher`` and reused while its config and
checkpoint are unchanged. Every run uses the code path of ``tools/train.py``. Each model is a
progress bar (epoch, loss, validation top-1, time left); mmengine's logs go to each run's log
file (``<run work dir>/<timestamp>/<timestamp>.log``), and also to the terminal with
``--verbose``. The table is printed and written to ``<work-dir>/results.md`` and
``results.json``, the validation curves to ``<work-dir>/curves.png``.
"""
import argparse
import os.path as osp

from mmkd.demo.digits import DIGITS_ENTRIES, run_comparison
from mmkd.demo.progress import TrainingProgress
from mmkd.demo.report import format_table, plot_curves, write_report
from mmkd.utils.cli import add_debug_argument, run_cli


def parse_args() -> argparse.Namespace:
    default = [name for name, entry in DIGITS_ENTRIES.items()
               if entry.in_demo and entry.baseline is not None]
    parser = argparse.ArgumentParser(
        description='Digits distillation demo: teacher, baseline student, distilled students')
    parser.add_argument('--methods', nargs='+', default=default, metavar='NAME',
                        help=f'methods to run (default: {" ".join(default)}); their baselines '
                        'run too. --list shows them all')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0], help='student seeds')
    parser.add_argument('--epochs', type=int,
                        help='student epochs (default: the configs\', 60); for quick checks')
    parser.add_argument('--teacher-epochs', type=int,
                        help='teacher epochs (default: the config\'s, 30)')
    parser.add_argument('--val-interval', type=int,
                        help='validate the students every N epochs (default: the configs\')')
    parser.add_argument('--shots-per-class', type=int,
                        help='student training images per class (default: the configs\', 20; '
                        '0: all); for quick checks')
    parser.add_argument('--work-dir', default='work_dirs/digits_demo',
                        help='where the student runs and the table go')
    parser.add_argument('--teacher-dir', default='work_dirs/digits_teacher',
                        help='the teacher\'s cache (the digits configs\' teacher_ckpt points '
                        'here)')
    parser.add_argument('--teacher-ckpt', help='use this teacher checkpoint instead')
    parser.add_argument('--retrain-teacher', action='store_true',
                        help='train the teacher even if its cache is valid')
    parser.add_argument('--verbose', action='store_true',
                        help='print mmengine\'s logs to the terminal too (they are always in '
                        'each run\'s log file)')
    parser.add_argument('--list', action='store_true', help='list the methods and exit')
    add_debug_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.list:
        for name, entry in DIGITS_ENTRIES.items():
            role = 'baseline' if entry.baseline is None else f'vs {entry.baseline}'
            demo = '' if entry.in_demo else ' (benchmark only)'
            print(f'{name:12s} configs/{entry.config}  [{role}]{demo}')
        return
    progress = TrainingProgress(verbose=args.verbose)
    if not args.verbose:
        progress.message(f'mmengine\'s logs: {args.work_dir}/<method>/seed<S>/<timestamp>/ and '
                         f'{args.teacher_dir}/<timestamp>/ (--verbose prints them here too)')
    comparison = run_comparison(args.methods, args.seeds, args.work_dir, args.teacher_dir,
                                args.epochs, args.teacher_epochs, args.val_interval,
                                args.retrain_teacher, args.teacher_ckpt, args.shots_per_class,
                                progress)
    md_path, json_path = write_report(comparison, args.work_dir)
    png_path = plot_curves(comparison, osp.join(args.work_dir, 'curves.png'))
    print('\n' + format_table(comparison) + f'\n\nWritten to {md_path} and {json_path}'
          f'\nValidation curves: {png_path}')


if __name__ == '__main__':
    run_cli(main)
