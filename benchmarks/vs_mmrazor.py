"""mmkd against MMRazor 1.0.0: the same model pairs, the same batches, timed alternately.

Finding: MMRazor 1.0.0 (the last release, pure Python) does not import on torch 2.x as it is
installed here. ``mmrazor.models`` imports ``mmrazor.structures``, whose quantization
subpackage (``mmrazor.structures.quantization``, used only by quantization) imports private
torch names that torch removed (``reverse2``, ``reverse3``, ``reverse_sequential_wrapper2``
from ``torch.ao.quantization.fuser_method_mappings``); MMRazor catches that ``ImportError``,
puts a placeholder in their place and then fails on its first use with ``ImportError: `torch>=1.13`
is not installed properly``. Replacing that one subpackage by a placeholder module before the
import makes the distillation part import and register (``SingleTeacherDistill``,
``OverhaulFeatureDistillation``, ``OFDLoss``...). The placeholder cannot be *empty*: two
quantization modules outside it (``mmrazor/models/algorithms/quantization/mm_architecture.py``,
``mmrazor/models/quantizers/*.py``) import ``QConfigHandler`` and ``BackendConfigs`` from it, so
it answers every name with a class that raises when used. ``scipy`` (OFD's margins),
``ordered-set`` and ``joblib`` must be importable. This script checks and prints all of that on
every run: the stock import's error, which of the private torch names exist, then the
placeholder import.

Where MMRazor goes: ``pip install --no-deps --target <dir> mmrazor==1.0.0`` (plus whichever of
its light dependencies the environment lacks) into a directory this script owns, by default
``~/.cache/mmkd/benchmarks/mmrazor-1.0.0`` (``--mmrazor-dir``). That directory is *appended* to
``sys.path`` of this process only, so the environment's own packages always win and nothing in
the environment (``.venv/lib/.../site-packages``) is written or shadowed; mmkd's tests never
see MMRazor. No file of MMRazor is edited: the placeholder lives in ``sys.modules``. Without
network, install it beforehand from a wheel (``pip install --no-index --no-deps --target DIR
mmrazor-1.0.0-py2.py3-none-any.whl``) and pass ``--mmrazor-dir DIR --no-install``
(``tools/gpu_run.sh`` does).

Pairs (models built once from stock configs by the same code and handed to both toolboxes, the
same random-weight teacher checkpoint, its BN running statistics taken from the first batch
(``_common.calibrate_teacher_bn``), the same optimizer, teacher BN in eval mode in both, which is
MMRazor's default):

- ``cls``: mmpretrain ResNet-50 -> ResNet-18, 64 px, batch 16 (the issue's anchor);
- ``det``: mmdet RetinaNet R-101 -> R-50, taps on the four backbone stages, 256 px, batch 2;
- ``cwd-det``, ``cwd-seg``, ``pkd-det``, ``dist-cls``: mmkd's configs of these methods (GFL,
  PSPNet, RetinaNet, ResNet-34 -> 18; sizes of ``_common.PRESETS``) against MMRazor's
  ``ChannelWiseDivergence``, ``PKDLoss`` and ``DISTLoss`` with the same arguments, on the same
  modules and calls (:func:`mmrazor_dense_distiller` translates the config's ``tap_pairs``:
  mmkd's ``data_idx`` is MMRazor's ``record_idx``), in MMRazor's ``SingleTeacherDistill`` or,
  for PKD, its ``FpnTeacherDistill`` (teacher backbone and neck only), as its configs do. MMRazor
  1.0's GFL config (``cwd_cls_head_gfl_...``) inherits the FPN taps of its Faster R-CNN config
  despite its name; ``cwd-det`` times the head's classification logits on both sides.

Method: OFD when mmkd has it (``configs/ofd``): MMRazor's
``OverhaulFeatureDistillation`` with ``OFDDistiller``, ``ConvModuleConnector`` (1x1 conv + BN),
``OFDTeacherConnector`` and ``OFDLoss``, taps on the last BN of each stage as in MMRazor's OFD
configs (MMRazor has no pre-ReLU recorder), against mmkd's OFD config (pre-ReLU taps, the same
connector and loss shapes). Until then FitNets-style hints: MMRazor's ``ConfigurableDistiller``
with ``ConvModuleConnector`` and ``L2Loss(normalize=False)`` on the same BN taps against
``configs/benchmarks/fitnets_*.py``. MMRazor runs its teacher in ``loss`` mode to the end (the
detector's heads, anchors and assignment included); mmkd stops its teacher after the last tap.

Also timed in the same rounds: the student's plain step and the teacher's forward up to its
last tap, so each toolbox's ``R_overhead`` is printed next to the ratio mmkd / MMRazor.

Usage::

    python benchmarks/vs_mmrazor.py                  # the cls and det pairs
    python benchmarks/vs_mmrazor.py --pairs cls --rounds 30
    python benchmarks/vs_mmrazor.py --pairs cwd-det cwd-seg pkd-det dist-cls
    python benchmarks/vs_mmrazor.py --device cuda --amp
    python benchmarks/vs_mmrazor.py --device cuda --pairs det --size 800x1333 --batch-size 2
"""
import argparse
import copy
import importlib.util
import os.path as osp
import subprocess
import sys
import tempfile
import types
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common as C  # noqa: E402

from mmengine.registry import DefaultScope  # noqa: E402

from mmkd.models import build_model_from_cfg  # noqa: E402

MMRAZOR = 'mmrazor==1.0.0'
DEFAULT_DIR = osp.expanduser('~/.cache/mmkd/benchmarks/mmrazor-1.0.0')
QUANTIZATION = 'mmrazor.structures.quantization'
REMOVED_TORCH_NAMES = ('torch.ao.quantization.fuser_method_mappings',
                       ('reverse2', 'reverse3', 'reverse_sequential_wrapper2'))
#: import name -> package name of MMRazor's light dependencies.
DEPENDENCIES = {'ordered_set': 'ordered-set', 'joblib': 'joblib', 'scipy': 'scipy'}

#: pair -> the presets of ``_common.PRESETS`` to use, the first whose config exists.
PAIRS = {'cls': ('ofd-cls', 'fitnets-cls'), 'det': ('ofd-det', 'fitnets-det'),
         'cwd-det': ('cwd-det',), 'cwd-seg': ('cwd-seg',), 'pkd-det': ('pkd-det',),
         'dist-cls': ('dist-cls',)}
#: mmkd loss -> MMRazor's loss of the same method (same constructor arguments) and the names of
#: its student and teacher arguments, for the pairs whose distiller is translated from the mmkd
#: config's ``tap_pairs`` (:func:`mmrazor_dense_distiller`).
MMRAZOR_LOSSES = {'CWDLoss': ('ChannelWiseDivergence', 'preds_S', 'preds_T'),
                  'PKDLoss': ('PKDLoss', 'preds_S', 'preds_T'),
                  'DISTLoss': ('DISTLoss', 'logits_S', 'logits_T')}
#: method -> MMRazor's algorithm (its PKD configs run the teacher's backbone and neck only).
MMRAZOR_ALGORITHMS = {'ofd': 'OverhaulFeatureDistillation', 'pkd': 'FpnTeacherDistill'}


class MMRazorUnavailable(RuntimeError):
    """MMRazor cannot be installed or imported here; the message says why."""


# -- installing and importing MMRazor ----------------------------------------------------------
def install_mmrazor(target: str, allowed: bool = True) -> None:
    """``pip install --no-deps --target`` MMRazor and its missing light dependencies, unless
    ``target`` has it already (or installing is not ``allowed``: then it must be there)."""
    if osp.isfile(osp.join(target, 'mmrazor', '__init__.py')):
        return
    if not allowed:
        raise MMRazorUnavailable(f'it is not in {target} and --no-install forbids installing '
                                 f'it (e.g. `pip install --no-deps --target {target} '
                                 f'{MMRAZOR}`, or --mmrazor-dir a folder that has it).')
    missing = [pkg for mod, pkg in DEPENDENCIES.items() if importlib.util.find_spec(mod) is None]
    cmd = [sys.executable, '-m', 'pip', 'install', '--no-deps', '--target', target, MMRAZOR,
           *missing]
    print('installing:', ' '.join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise MMRazorUnavailable(f'`{" ".join(cmd)}` failed:\n{done.stderr[-2000:]}')


def stock_import_error(target: str) -> Optional[str]:
    """The last line of the error of ``import mmrazor.models`` as released, or ``None``."""
    code = f'import sys; sys.path.append({target!r}); import mmrazor.models'
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f'exit status {done.returncode}'


def removed_torch_names() -> List[str]:
    module_name, names = REMOVED_TORCH_NAMES
    module = importlib.import_module(module_name)
    return [f'{module_name}.{name}' for name in names if not hasattr(module, name)]


class _QuantizationUnavailable:
    """Stands for every name of MMRazor's quantization subpackage; fails when used."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(f'{QUANTIZATION} is a placeholder here (MMRazor 1.0.0 quantization '
                           'does not import on this torch).')


def _placeholder_attr(name: str):
    if name.startswith('__'):
        raise AttributeError(name)
    return _QuantizationUnavailable


def import_mmrazor(target: str) -> types.ModuleType:
    """Import MMRazor from ``target`` with its quantization subpackage replaced."""
    if target not in sys.path:
        sys.path.append(target)
    placeholder = types.ModuleType(QUANTIZATION, 'placeholder, see benchmarks/vs_mmrazor.py')
    placeholder.__path__ = []
    placeholder.__all__ = []
    placeholder.__getattr__ = _placeholder_attr
    sys.modules[QUANTIZATION] = placeholder
    try:
        import mmrazor
        import mmrazor.models  # noqa: F401  (registers the algorithms)
    except Exception as error:
        raise MMRazorUnavailable(f'import with the placeholder failed: {type(error).__name__}: '
                                 f'{error}') from error
    if not mmrazor.__file__.startswith(osp.abspath(target)):
        print(f'note: mmrazor imported from {mmrazor.__file__}, not from {target}')
    return mmrazor


#: MMRazor folder -> what :func:`prepare_mmrazor` found there, in this process.
_prepared: Dict[str, List[str]] = {}


def prepare_mmrazor(target: str, install: bool = True) -> types.ModuleType:
    """Install (if ``install``), report the stock import's failure, import with the
    placeholder. Done once per process and folder (``tools/gpu_check.py`` calls :func:`main`
    once per pair; the stock import's check is a subprocess of several seconds): later calls
    print the same findings again."""
    if target in _prepared:
        print('\n'.join(_prepared[target]))
        return sys.modules['mmrazor']
    install_mmrazor(target, install)
    error = stock_import_error(target)
    found = [f'MMRazor 1.0.0 as released: {error or "imports"}']
    missing = removed_torch_names()
    if missing:
        found.append(f'private torch names it imports that torch {torch.__version__} lacks: '
                     f'{missing}')
    mmrazor = import_mmrazor(target)
    from mmrazor.registry import MODELS
    names = ('SingleTeacherDistill', 'OverhaulFeatureDistillation', 'OFDLoss', 'L2Loss',
             'FpnTeacherDistill', 'ChannelWiseDivergence', 'PKDLoss', 'DISTLoss')
    found.append(f'with {QUANTIZATION} replaced by a placeholder: ' + ', '.join(
        f'{n} {"registered" if MODELS.get(n) else "MISSING"}' for n in names))
    print('\n'.join(found))
    _prepared[target] = found
    return mmrazor


# -- the MMRazor side of a pair ----------------------------------------------------------------
def last_bn_of_stages(model: nn.Module) -> List[str]:
    """``backbone.layer{i}.{last block}.bn{2|3}``: the last BN of each ResNet stage."""
    names = []
    for stage in (1, 2, 3, 4):
        layer = getattr(model.backbone, f'layer{stage}')
        last = len(layer) - 1
        bn = 'bn3' if hasattr(layer[last], 'bn3') else 'bn2'
        names.append(f'backbone.layer{stage}.{last}.{bn}')
    return names


def mmrazor_distiller(method: str, student: nn.Module, teacher: nn.Module) -> dict:
    s_taps, t_taps = last_bn_of_stages(student), last_bn_of_stages(teacher)
    modules_s, modules_t = dict(student.named_modules()), dict(teacher.named_modules())
    recorders = lambda taps: {f'bb_{i}': dict(type='ModuleOutputs', source=s)  # noqa: E731
                              for i, s in enumerate(taps)}
    connectors, losses, mappings = {}, {}, {}
    for i, (s, t) in enumerate(zip(s_taps, t_taps)):
        connectors[f's_{i}'] = dict(
            type='ConvModuleConnector', in_channel=modules_s[s].num_features,
            out_channel=modules_t[t].num_features, norm_cfg=dict(type='BN'), act_cfg=None)
        t_spec = dict(from_student=False, recorder=f'bb_{i}')
        if method == 'ofd':
            connectors[f't_{i}'] = dict(type='OFDTeacherConnector')
            t_spec['connector'] = f't_{i}'
            losses[f'loss_{i}'] = dict(type='OFDLoss', loss_weight=1e-4 / 2**(3 - i))
        else:
            losses[f'loss_{i}'] = dict(type='L2Loss', normalize=False)
        mappings[f'loss_{i}'] = dict(
            s_feature=dict(from_student=True, recorder=f'bb_{i}', connector=f's_{i}'),
            t_feature=t_spec)
    return dict(type='OFDDistiller' if method == 'ofd' else 'ConfigurableDistiller',
                student_recorders=recorders(s_taps), teacher_recorders=recorders(t_taps),
                connectors=connectors, distill_losses=losses, loss_forward_mappings=mappings)


def mmrazor_dense_distiller(tap_pairs: List[dict]) -> dict:
    """MMRazor's ``ConfigurableDistiller`` doing what mmkd's compact ``tap_pairs`` declare (CWD,
    PKD, DIST): ``ModuleOutputs`` recorders on the same modules, MMRazor's loss of the method with
    the same arguments, and mmkd's ``data_idx`` (which call of the module) as MMRazor's
    ``record_idx``."""
    s_recorders, t_recorders, losses, mappings = {}, {}, {}, {}
    for pair in tap_pairs:
        loss = dict(pair['loss'])
        razor_type, s_arg, t_arg = MMRAZOR_LOSSES[loss.pop('type').split('.')[-1]]
        sources = dict(s=pair['student'], t=pair.get('teacher', pair['student']))
        for side, recorders in (('s', s_recorders), ('t', t_recorders)):
            recorders[sources[side]] = dict(type='ModuleOutputs', source=sources[side])
        name = f'loss_{pair["name"]}'
        losses[name] = dict(type=razor_type, **loss)
        mappings[name] = {
            arg: dict(from_student=side == 's', recorder=sources[side],
                      record_idx=pair.get('data_idx') or 0)
            for arg, side in ((s_arg, 's'), (t_arg, 't'))}
    return dict(type='ConfigurableDistiller', student_recorders=s_recorders,
                teacher_recorders=t_recorders, distill_losses=losses,
                loss_forward_mappings=mappings)


def build_mmrazor_algorithm(method: str, model_cfg: dict, ckpt: str,
                            device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    student = build_model_from_cfg(copy.deepcopy(model_cfg['architecture']), 'student')
    teacher = build_model_from_cfg(copy.deepcopy(model_cfg['teacher']), 'teacher')
    from mmrazor.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmrazor'):
        distiller = (mmrazor_dense_distiller(model_cfg['distiller']['tap_pairs'])
                     if method in ('cwd', 'pkd', 'dist')
                     else mmrazor_distiller(method, student, teacher))
        algorithm = MODELS.build(dict(
            type=MMRAZOR_ALGORITHMS.get(method, 'SingleTeacherDistill'),
            architecture=student, teacher=teacher, teacher_ckpt=ckpt, distiller=distiller))
        algorithm.init_weights()
    algorithm.to(device)
    algorithm.train()  # MMRazor's ``train`` returns None
    return algorithm


def mmrazor_optim_wrapper(algorithm: nn.Module, amp: bool):
    """mmengine's default constructor, as MMRazor's configs get it (teacher parameters listed,
    without gradients)."""
    with DefaultScope.overwrite_default_scope('mmrazor'):
        return C.optim_wrapper_for(algorithm, amp)


# -- one pair -----------------------------------------------------------------------------------
def mmkd_preset(pair: str, config: Optional[str] = None) -> Tuple[str, str, int, int, int]:
    """(method, config path, size, batch size, rounds) of the pair's mmkd config, or of
    ``config`` (an mmkd OFD config is compared with MMRazor's OFD, any other with MMRazor's
    hints on the same taps) with the pair's size, batch size and rounds."""
    for preset in PAIRS[pair]:
        path, size, batch_size, rounds = C.PRESETS[preset]
        if config is not None:
            algorithm = C.load_model_cfg(config).get('type', '')
            method = 'ofd' if algorithm.endswith('OverhaulFeatureDistillation') else 'fitnets'
            return method, osp.abspath(config), size, batch_size, rounds
        if osp.isfile(osp.join(C.REPO, path)):
            return preset.split('-')[0], osp.join(C.REPO, path), size, batch_size, rounds
    raise FileNotFoundError(f'no mmkd config for the {pair} pair: {PAIRS[pair]}.')


def run_pair(pair: str, args: argparse.Namespace, device: torch.device,
             mmrazor_ok: bool) -> Dict[str, float]:
    method, config, size, batch_size, rounds = mmkd_preset(pair, args.config)
    size, batch_size = args.size or size, args.batch_size or batch_size
    rounds = args.rounds or rounds
    model_cfg = C.load_model_cfg(config)
    model_cfg['teacher_norm_mode'] = 'eval'  # MMRazor's default, so both do the same work
    print(f'\n== {pair}: {method}, mmkd {osp.relpath(config, C.REPO)} ({C.size_text(size)}, '
          f'batch {batch_size}) ==', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = C.save_random_checkpoint(model_cfg['teacher'], osp.join(tmp, 'teacher.pth'))
        mmkd = C.build_mmkd_algorithm(model_cfg, ckpt, size, device)
        task = C.task_of(mmkd.student)
        batches = [C.make_batch(task, batch_size, size, C.num_classes_of(mmkd.student, task),
                                seed) for seed in range(args.num_batches)]
        preprocessed = [mmkd.data_preprocessor(copy.deepcopy(b), True) for b in batches]
        # BN statistics of the data, as a trained teacher's; MMRazor loads the same teacher
        C.calibrate_teacher_bn(mmkd, preprocessed[0])
        torch.save({'state_dict': mmkd.teacher.state_dict()}, ckpt)
        razor = build_mmrazor_algorithm(method, model_cfg, ckpt, device) if mmrazor_ok else None
    student, teacher = C.plain_student(model_cfg, mmkd), C.plain_teacher(model_cfg, mmkd)
    stop_at = C.last_tap_point(teacher, mmkd, preprocessed[0]['inputs'],
                               preprocessed[0]['data_samples'])
    steps = dict(
        student=C.train_step_fn(student, C.optim_wrapper_for(student, args.amp), batches),
        teacher=C.teacher_forward_fn(teacher, stop_at, device, args.amp, preprocessed),
        mmkd=C.train_step_fn(mmkd, C.optim_wrapper_for(mmkd, args.amp), batches))
    if razor is not None:
        steps['mmrazor'] = C.train_step_fn(razor, mmrazor_optim_wrapper(razor, args.amp),
                                           batches)
    print(C.machine_info(device, args.amp), flush=True)
    times = C.interleaved_times(steps, device, args.warmup, rounds)
    med = {name: C.median(values) for name, values in times.items()}
    limit = med['student'] + med['teacher']
    for name, values in times.items():
        print(f'{name:8s} {C.spread(values)} s')
    result = dict(student=med['student'], teacher=med['teacher'], mmkd=med['mmkd'],
                  r_mmkd=med['mmkd'] / limit, load=C.load_1min(), method=method)
    print(f'R_overhead mmkd    {result["r_mmkd"]:.3f}')
    if razor is not None:
        result.update(mmrazor=med['mmrazor'], r_mmrazor=med['mmrazor'] / limit,
                      ratio=med['mmkd'] / med['mmrazor'])
        print(f'R_overhead MMRazor {result["r_mmrazor"]:.3f}')
        print(f'mmkd / MMRazor     {result["ratio"]:.3f}')
    print(f'load(1 min) after: {C.load_1min():.2f}', flush=True)
    return result


def summary(results: Dict[str, Dict[str, float]]) -> str:
    rows = ['| pair | method | student s | teacher s | mmkd s | MMRazor s | R mmkd | R MMRazor '
            '| mmkd / MMRazor | load |', '|---|---|---|---|---|---|---|---|---|---|']
    for pair, r in results.items():
        razor = (f'{r["mmrazor"]:.3f} | {r["r_mmkd"]:.3f} | {r["r_mmrazor"]:.3f} | '
                 f'{r["ratio"]:.3f}' if 'mmrazor' in r else f'- | {r["r_mmkd"]:.3f} | - | -')
        rows.append(f'| {pair} | {r["method"]} | {r["student"]:.3f} | {r["teacher"]:.3f} | '
                    f'{r["mmkd"]:.3f} | {razor} | {r["load"]:.2f} |')
    return '\n'.join(rows)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pairs', nargs='+', choices=sorted(PAIRS), default=['cls', 'det'],
                        help='default: cls det (the OFD pairs)')
    parser.add_argument('--config', help='an mmkd config of a ResNet pair to use instead of the '
                        "pair's (one pair; e.g. configs/digits/ofd_resnet18_w32_w4.py)")
    parser.add_argument('--mmrazor-dir', default=DEFAULT_DIR,
                        help='where MMRazor 1.0.0 is installed (pip --target)')
    parser.add_argument('--no-install', action='store_true',
                        help='never run pip: use MMRazor only if --mmrazor-dir has it')
    parser.add_argument('--size', type=C.parse_size,
                        help='input size, H or HxW (default: per pair)')
    parser.add_argument('--batch-size', type=int, help='batch size (default: per pair)')
    parser.add_argument('--rounds', type=int, help='timed rounds (default: per pair)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--num-batches', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'auto'")
    parser.add_argument('--amp', action='store_true', help='float16 autocast (CUDA)')
    parser.add_argument('--clock', choices=sorted(C.CLOCKS), default='wall',
                        help="'wall' or 'cpu' (process CPU time, for a shared machine; with "
                             "--threads 1)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    """Run as the command line ``argv`` (default ``sys.argv[1:]``) asks; returns each pair's
    figures."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.config and len(args.pairs) > 1:
        raise SystemExit('--config fits one pair: give one of --pairs.')
    device = C.setup(args.threads, args.device, args.amp)
    C.use_clock(args.clock, device)
    print(f'command: {" ".join([osp.basename(sys.executable), __file__, *argv])}')
    try:
        prepare_mmrazor(args.mmrazor_dir, install=not args.no_install)
        mmrazor_ok = True
    except MMRazorUnavailable as error:
        print(f'MMRazor cannot run here, so only mmkd is timed: {error}')
        mmrazor_ok = False
    results = {pair: run_pair(pair, args, device, mmrazor_ok) for pair in args.pairs}
    print('\n' + C.machine_info(device, args.amp))
    print(summary(results))
    return results


if __name__ == '__main__':
    main()
