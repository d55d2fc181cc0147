"""Train a model (a distillation algorithm or a plain model) from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--amp [--amp-dtype bfloat16]] [--resume [CKPT]]
                          [--cfg-options ...]
    tools/dist_train.sh CONFIG NUM_PROCESSES [args]    # torchrun; gloo on CPU
"""
import argparse

from mmkd.apis.train import build_train_runner
from mmkd.utils.cli import add_runner_arguments, parse_runner_args, require_file, run_cli
from mmkd.utils.dist import close_process_group


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with mmkd')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (CUDA; float16 with '
                        'dynamic loss scaling unless --amp-dtype bfloat16)')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                        help='precision of --amp (implies --amp); default float16')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or from the latest checkpoint of the '
                        'work dir when no path is given')
    add_runner_arguments(parser)
    return parse_runner_args(parser)


def main() -> None:
    args = parse_args()
    if args.resume not in (None, 'auto'):
        require_file(args.resume, '--resume checkpoint')
    if args.amp_dtype is not None:  # read by mmkd.apis.train.enable_amp
        args.amp = True
        args.cfg_options = {**(args.cfg_options or {}), 'optim_wrapper.dtype': args.amp_dtype}
    runner = build_train_runner(args.config, args.work_dir, args.amp, args.auto_scale_lr,
                                args.resume, args.cfg_options, args.launcher)
    try:
        runner.train()
    finally:
        close_process_group()


if __name__ == '__main__':
    run_cli(main)
