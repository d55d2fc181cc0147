"""List the layer names a distillation config can tap, with their shapes.

    python tools/list_taps.py CONFIG [--input-shape 3 224 224] [--student | --teacher]
                              [--modules [PATTERN]]

CONFIG is a distillation config (its student and teacher are listed, and their stages are
paired with the connector each pair needs) or a plain model config, also one that ships with a
package: ``mmpretrain::resnet/resnet18_8xb32_in1k.py``,
``mmdet::retinanet/retinanet_r50_fpn_1x_coco.py``, ``mmseg::pspnet/...``. Models are built
without pretrained weights and run once in ``tensor`` mode on a random input (detectors and
segmentors with the image metainfo of a real run); nothing is downloaded.

For each model it prints:

- the candidate pre-ReLU taps (stages and blocks, for feature methods such as FitNets, OFD);
- the neck and head outputs, the taps of dense methods (CWD, PKD, DIST on logits): every tensor
  the neck and each head return, with the module call that produces it — ``neck.fpn_convs.<i>``
  per FPN level, a head conv shared by the levels once per level with its ``data_idx``
  (``bbox_head.gfl_cls`` at 0..4), ``decode_head.conv_seg``, ``head.fc`` — and its shape;
- with ``--modules``, every module matching PATTERN with its output shapes and call count.
"""
import argparse

from mmkd.apis.taps import (default_input_shape, discover_taps, format_output_taps,
                            format_pairs, format_tap_pairs_cfg, format_taps, load_models,
                            module_outputs, output_taps, pair_stages)
from mmkd.utils import register_all_modules
from mmkd.utils.cli import add_debug_argument, run_cli
from mmkd.utils.errors import ConfigError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='List the pre-ReLU taps and the neck and head outputs of a config\'s models')
    parser.add_argument('config', help='config file or package::path.py')
    parser.add_argument('--input-shape', nargs=3, type=int, metavar=('C', 'H', 'W'),
                        help='dummy input shape (default: the distillation config\'s '
                        'dry_run_shape, else 3 224 224)')
    side = parser.add_mutually_exclusive_group()
    side.add_argument('--student', action='store_true', help='list the student only')
    side.add_argument('--teacher', action='store_true', help='list the teacher only')
    parser.add_argument('--modules', nargs='?', const='*', metavar='PATTERN',
                        help='also list every module (matching the fnmatch PATTERN, e.g. '
                        "'backbone.layer4*') with its output shape, for ModuleOutputs")
    add_debug_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=False)
    models = load_models(args.config)
    if (args.student or args.teacher) and 'model' in models:
        raise ConfigError(f'{args.config} is not a distillation config: it has no student and '
                          'teacher; drop --student/--teacher.')
    wanted = [role for role in models
              if not (args.student and role == 'teacher' or args.teacher and role == 'student')]
    shape = tuple(args.input_shape or default_input_shape(args.config))
    taps = {}
    for role in wanted:
        model = models[role]
        taps[role] = discover_taps(model, shape)
        print(f'\n{role}: {type(model).__module__}.{type(model).__name__}, dummy input '
              f'(1, {", ".join(map(str, shape))}); candidate pre-ReLU taps:')
        print(format_taps(taps[role]))
        outputs = output_taps(model, shape)
        if outputs:
            print(f'\n{role}: neck and head outputs, the taps of dense methods (recorder '
                  "'ModuleOutputs', the default; data_idx picks the call of a module that runs "
                  'once per pyramid level):')
            print(format_output_taps(outputs))
        if args.modules:
            print(f'\n{role}: modules matching {args.modules!r} (for ModuleOutputs):')
            for name, shapes, calls in module_outputs(model, shape, args.modules):
                print(f'  {name}  {shapes}' + (f'  ({calls} calls)' if calls > 1 else ''))
    if set(taps) == {'student', 'teacher'}:
        pairs = pair_stages(taps['student'], taps['teacher'])
        print('\nstage pairs and the connector each needs on the student side:')
        print(format_pairs(pairs))
        print('\nas tap_pairs of ConfigurableDistiller (choose the loss and the stages):')
        print(format_tap_pairs_cfg(pairs))


if __name__ == '__main__':
    run_cli(main)
