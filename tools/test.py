"""Evaluate a checkpoint: a distillation checkpoint with its distillation config (the student is
evaluated), or an exported student with the stock student config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
"""
import argparse

from mmkd.apis.test import build_test_runner
from mmkd.utils.cli import add_runner_arguments, parse_runner_args, require_file, run_cli
from mmkd.utils.dist import close_process_group


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model with mmkd')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the evaluation metrics')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    add_runner_arguments(parser)
    return parse_runner_args(parser)


def main() -> None:
    args = parse_args()
    require_file(args.checkpoint, 'checkpoint')
    runner = build_test_runner(args.config, args.checkpoint, args.work_dir, args.out,
                               args.cfg_options, args.launcher)
    try:
        runner.test()
    finally:
        close_process_group()


if __name__ == '__main__':
    run_cli(main)
