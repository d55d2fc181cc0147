"""Accuracy of every distillation method on digits: the teacher, the baseline student and each
method's student over several seeds, as a markdown table (mean ± std top-1) and a plot of the
validation accuracy over epochs.

    python benchmarks/accuracy_digits.py [--methods ...] [--seeds 0 1 2] [--val-interval 2]
                                         [--shots-per-class 20] [--work-dir ...]

Writes ``accuracy_digits.md``, ``accuracy_digits.json`` and ``accuracy_digits.png`` to the work
dir. Shares everything with ``tools/digits_demo.py`` (``mmkd.demo``); unlike the
demo it runs every method of the table, including slow ones.
"""
import argparse
import os.path as osp

from mmkd.demo.digits import DIGITS_ENTRIES, run_comparison
from mmkd.demo.report import format_table, plot_curves, write_report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Digits accuracy of every method')
    parser.add_argument('--methods', nargs='+', default=list(DIGITS_ENTRIES),
                        help='entries of the method table (default: all)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--epochs', type=int, help='student epochs (default: the configs\')')
    parser.add_argument('--teacher-epochs', type=int)
    parser.add_argument('--val-interval', type=int, default=2,
                        help='validate every N epochs: the points of the curves')
    parser.add_argument('--work-dir', default='work_dirs/accuracy_digits')
    parser.add_argument('--teacher-dir', default='work_dirs/digits_teacher')
    parser.add_argument('--teacher-ckpt', help='use this teacher checkpoint instead')
    parser.add_argument('--retrain-teacher', action='store_true')
    parser.add_argument('--shots-per-class', type=int,
                        help='student training images per class (0: all; default: the '
                        'configs\', 20)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    comparison = run_comparison(args.methods, args.seeds, args.work_dir, args.teacher_dir,
                                args.epochs, args.teacher_epochs, args.val_interval,
                                args.retrain_teacher, args.teacher_ckpt,
                                args.shots_per_class)
    paths = write_report(comparison, args.work_dir, stem='accuracy_digits')
    png = plot_curves(comparison, osp.join(args.work_dir, 'accuracy_digits.png'))
    print('\n' + format_table(comparison) + '\n\nWritten to ' + ', '.join([*paths, png]))


if __name__ == '__main__':
    main()
