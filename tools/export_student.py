"""Write the student of a distillation checkpoint as a checkpoint of the stock student model.

    python tools/export_student.py CKPT OUT [--config CONFIG] [--trust] [--force]

OUT holds the student's weights under the stock model's keys (zero missing or unexpected keys)
and the run's ``meta`` (epoch, iter, cfg, seed, ...: the layout of ``StudentCheckpointHook``'s
files, see ``mmkd/models/algorithms/checkpoint_layout.py``); the teacher, the connectors and the
optimizer state are left out. Use it
with the student's own config: ``tools/test.py STUDENT_CONFIG OUT``, ``load_from=OUT`` or
``mmengine.runner.load_checkpoint(model, OUT, strict=True)``. Reads mmkd checkpoints
(``student.`` keys) and MMRazor ones (``architecture.`` keys). To save student-only checkpoints
while training, add ``dict(type='mmkd.StudentCheckpointHook', interval=N)`` to
``custom_hooks``.

OUT is written atomically (a temporary file next to it, then renamed). It must not be CKPT
itself (also not through a link); an existing OUT is replaced only with ``--force``.
"""
import argparse

from mmkd.apis.export import check_student_checkpoint, export_student
from mmkd.utils import register_all_modules


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the student of a distillation checkpoint')
    parser.add_argument('checkpoint', help='distillation checkpoint')
    parser.add_argument('out', help='student checkpoint to write')
    parser.add_argument('--config', help='distillation or student config: load OUT strictly '
                        'into its student (built without pretrained weights) to check it')
    parser.add_argument('--trust', action='store_true',
                        help='allow full unpickling of a legacy checkpoint that holds Python '
                        'objects besides tensors (only for files from a source you trust)')
    parser.add_argument('--force', action='store_true',
                        help='replace OUT if it exists (never when OUT is CKPT itself)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = export_student(args.checkpoint, args.out, args.trust, args.force)
    print(f'wrote the student of {args.checkpoint} to {out}')
    if args.config:
        register_all_modules(init_default_scope=False)
        tensors, params = check_student_checkpoint(args.config, out)
        print(f'checked: {tensors} tensors load strictly into the student of {args.config} '
              f'({params} parameters), 0 missing, 0 unexpected keys')


if __name__ == '__main__':
    from mmkd.utils.cli import run_cli
    run_cli(main)
