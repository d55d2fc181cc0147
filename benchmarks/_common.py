"""Shared pieces of the benchmark scripts (``step_overhead.py``, ``vs_mmrazor.py``).

Timing (interleaved rounds, medians, CUDA-synchronised), peak-memory measurement on CPU and
CUDA, synthetic batches in the form the stock data pipelines of mmpretrain, mmdet and mmseg
produce, distillation algorithms built from a config with a random-weight teacher checkpoint,
and a description of the machine to print next to every figure.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. On
the CPU, torch's allocator reports every allocation and free to the profiler
(``profile_memory=True``); the running sum of those events gives the bytes held by live tensors,
exactly, at every point of the call. ``tracemalloc`` does not see torch's allocations and the
RSS of the process moves with glibc's caching, so neither is used. The figure is the peak
*increase* over what was allocated when the call started (weights, optimizer state and
gradients kept between steps are not counted; activations, gradients made during the step,
the teacher's recorded features and the connectors' buffers are).

Clocks: wall-clock seconds, or the process's CPU seconds (``--clock cpu``), which count the
work done and not the time spent waiting for a core on a machine shared with other jobs.
"""
import contextlib
import copy
import logging
import os
import os.path as osp
import platform
import random
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402

from mmkd.models import build_model_from_cfg  # noqa: E402
from mmkd.utils.config import strip_pretrained_init  # noqa: E402
from mmkd.models.algorithms.teacher import (freeze, set_teacher_mode,  # noqa: E402
                                            use_batch_statistics_without_updates)
from mmkd.models.recorders import (FunctionOutputsRecorder,  # noqa: E402
                                   MethodOutputsRecorder, ModuleInputsRecorder)
from mmkd.registry import MODELS  # noqa: E402
from mmkd.utils import register_all_modules  # noqa: E402
from mmkd.utils.misc import get_submodule  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _source import source_commit  # noqa: E402

#: The optimizer of every step timed here (mmpretrain's ImageNet ResNet setting).
OPTIMIZER = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)


# -- machine and devices ------------------------------------------------------------------------
def setup(threads: int, device: str, amp: bool) -> torch.device:
    """Fix the intra-op thread count, check the device and the AMP request.

    Raises:
        RuntimeError: CUDA asked for but not available, or AMP asked for on the CPU.
    """
    torch.set_num_threads(threads)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights' per-tensor lines
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    register_all_modules(init_default_scope=True)
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError('--device cuda, but torch sees no CUDA device; use --device cpu.')
    if amp and not device.startswith('cuda'):
        raise RuntimeError('--amp needs a CUDA device (mmengine\'s AmpOptimWrapper runs float16 '
                           'autocast on CUDA); drop --amp on the CPU.')
    return torch.device(device)


def load_1min() -> float:
    return os.getloadavg()[0]


def machine_info(device: torch.device, amp: bool) -> str:
    """One line naming the machine, the thread count, the load and the versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    where = f'CPU {cpu} ({os.cpu_count()} cores)'
    if device.type == 'cuda':
        where += f', GPU {torch.cuda.get_device_name(device)}'
    return (f'{where}; torch {torch.__version__}, {torch.get_num_threads()} threads, '
            f'device {device}, amp {amp}, clock {_clock_name()}, load(1 min) {load_1min():.2f}; '
            f'mmkd {source_commit()}')


def _clock_name() -> str:
    return next(name for name, clock in CLOCKS.items() if clock is _clock)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    """float16 autocast on CUDA when ``amp``, otherwise nothing."""
    if amp:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


# -- timing ---------------------------------------------------------------------------------------
#: ``--clock`` choices: wall-clock time, or the CPU time of the process (all its threads).
CLOCKS = dict(wall=time.perf_counter, cpu=time.process_time)
_clock = CLOCKS['wall']


def use_clock(name: str, device: torch.device) -> None:
    """Time with the wall clock (default) or the process's CPU time.

    CPU time counts only the work this process got done, not the time it waited for a core, so
    it stays usable on a machine shared with other jobs; run it with ``--threads 1`` (with more
    threads it also counts the time OpenMP workers spin while waiting for each other).

    Raises:
        ValueError: ``cpu`` on a CUDA device (the GPU's work is not CPU time).
    """
    global _clock
    if name == 'cpu' and device.type == 'cuda':
        raise ValueError('--clock cpu measures CPU work; on CUDA use --clock wall.')
    _clock = CLOCKS[name]


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, all its device work included, on the chosen clock."""
    synchronize(device)
    start = _clock()
    fn()
    synchronize(device)
    return _clock() - start


def interleaved_times(fns: Dict[str, Callable[[int], object]], device: torch.device,
                      warmup: int, rounds: int) -> Dict[str, List[float]]:
    """Time several step functions in alternation, round after round.

    Each function takes the round index (to pick the round's batch, the same for all of them).
    Alternating spreads slow drifts of the machine (other processes, thermal state) evenly over
    all functions, so their medians are comparable; the order is shuffled in every round
    (seeded), so that what the previous call left in the caches favours no function.

    Returns:
        dict: Name -> the ``rounds`` times in seconds.
    """
    order, shuffle = list(fns), random.Random(0).shuffle
    for index in range(warmup):
        for fn in fns.values():
            fn(index)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for index in range(rounds):
        shuffle(order)
        for name in order:
            times[name].append(time_call(lambda: fns[name](index), device))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """'median [q1, q3]' in seconds, three decimals."""
    if len(values) < 4:
        return f'{median(values):.3f}'
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f'{median(values):.3f} [{q1:.3f}, {q3:.3f}]'


# -- memory ---------------------------------------------------------------------------------------
def _cpu_peak_increase(fn: Callable[[], object]) -> int:
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == '[memory]' and e.device_type() == DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_memory_increase(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes held by tensors during ``fn`` above what was held when it started."""
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _cpu_peak_increase(fn)


def mib(num_bytes: float) -> str:
    return f'{num_bytes / 2**20:.1f} MiB'


# -- synthetic batches ----------------------------------------------------------------------------
TASKS = ('cls', 'det', 'seg')


def task_of(model: torch.nn.Module) -> str:
    """'cls', 'det' or 'seg' from the model's class hierarchy."""
    names = {cls.__name__ for cls in type(model).__mro__}
    if 'BaseClassifier' in names:
        return 'cls'
    if 'BaseDetector' in names:
        return 'det'
    if 'BaseSegmentor' in names:
        return 'seg'
    raise ValueError(f'cannot tell the task of {type(model).__name__}: expected an mmpretrain '
                     'classifier, an mmdet detector or an mmseg segmentor.')


Size = Union[int, Tuple[int, int]]  # an input size: H (square) or (H, W), in pixels


def hw(size: Size) -> Tuple[int, int]:
    """``(H, W)`` of a size given as ``H`` (square) or ``(H, W)``."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def parse_size(text: str) -> Size:
    """``'224'`` -> 224, ``'800x1333'`` -> (800, 1333) (height x width), for ``--size``."""
    parts = text.lower().split('x')
    if len(parts) == 1:
        return int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise ValueError(f'a size is H or HxW (e.g. 224 or 800x1333), got {text!r}.')


def size_text(size: Size) -> str:
    height, width = hw(size)
    return f'{height} px' if height == width else f'{height}x{width} px'


def make_batch(task: str, batch_size: int, size: Size, num_classes: int,
               seed: int) -> dict:
    """A batch as the stock data pipeline and ``pseudo_collate`` give it: uint8 images (3, H, W)
    and data samples with random ground truth (labels, 3 boxes per image, or a label map)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = hw(size)
    inputs = [torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
              for _ in range(batch_size)]
    makers = dict(cls=_cls_sample, det=_det_sample, seg=_seg_sample)
    samples = [makers[task]((height, width), num_classes, generator) for _ in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


def _cls_sample(shape: Tuple[int, int], num_classes: int, generator: torch.Generator):
    from mmpretrain.structures import DataSample
    label = int(torch.randint(0, num_classes, (1, ), generator=generator))
    return DataSample(metainfo=dict(img_shape=shape, ori_shape=shape)).set_gt_label(label)


def _det_sample(shape: Tuple[int, int], num_classes: int, generator: torch.Generator,
                num_boxes: int = 3):
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    height, width = shape
    corners = torch.rand((num_boxes, 2, 2), generator=generator) * torch.tensor([width, height])
    boxes = torch.cat([corners.min(1).values, corners.max(1).values + 8], dim=1)
    boxes = torch.min(boxes, torch.tensor([width, height, width, height]))
    instances = InstanceData(
        bboxes=HorizontalBoxes(boxes),
        labels=torch.randint(0, num_classes, (num_boxes, ), generator=generator))
    meta = dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0),
                flip=False, flip_direction=None)
    return DetDataSample(metainfo=meta, gt_instances=instances,
                         ignored_instances=InstanceData(bboxes=HorizontalBoxes(
                             torch.zeros((0, 4))), labels=torch.zeros((0, ), dtype=torch.long)))


def _seg_sample(shape: Tuple[int, int], num_classes: int, generator: torch.Generator):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    label = torch.randint(0, num_classes, (1, *shape), generator=generator)
    meta = dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0),
                flip=False, reduce_zero_label=False)
    return SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label))


def num_classes_of(model: torch.nn.Module, task: str) -> int:
    if task == 'cls':
        return model.head.num_classes
    if task == 'det':  # one-stage detectors have a bbox_head, two-stage ones a roi_head
        head = model.bbox_head if hasattr(model, 'bbox_head') else model.roi_head.bbox_head
        return head.num_classes
    return model.decode_head.num_classes


# -- building -------------------------------------------------------------------------------------
#: name -> config (relative to the repository), input size (px), batch size, timed rounds.
#: Stock training configs are used as they are (their pretrained weights are never loaded, see
#: :func:`load_model_cfg`); ``configs/benchmarks`` holds what needs a change to run in one CPU
#: process or has no training config. Classification at the issue's anchor (64 px, batch 16);
#: detection and segmentation at sizes that keep one step within seconds on two CPU threads.
PRESETS = {
    'ofd-cls': ('configs/ofd/ofd_resnet50_resnet18_8xb32_in1k.py', 64, 16, 20),
    'ofd-det': ('configs/ofd/ofd_retinanet_r101_r50_fpn_1x_coco.py', 256, 2, 8),
    'ofd-seg': ('configs/benchmarks/ofd_pspnet_r101_r18_seg.py', 128, 2, 8),
    'kd-cls': ('configs/benchmarks/kd_resnet50_resnet18_cls.py', 64, 16, 20),
    'fitnets-cls': ('configs/benchmarks/fitnets_resnet50_resnet18_cls.py', 64, 16, 20),
    'fitnets-det': ('configs/benchmarks/fitnets_retinanet_r101_r50.py', 256, 2, 8),
    'fsp-cls': ('configs/fsp/fsp_two_stage_resnet34_resnet18_8xb32_in1k.py', 64, 16, 20),
    'tekap-cls': ('configs/tekap/tekap_kd_resnet34_resnet18_8xb32_in1k.py', 64, 16, 20),
    'tekap-det': ('configs/tekap/tekap_ofd_retinanet_r101_r50_fpn_1x_coco.py', 256, 2, 8),
    'dearkd-digits': ('configs/digits/dearkd_resnet18_w32_mhca_vit.py', 32, 16, 20),
    'cwd-det': ('configs/cwd/cwd_gfl_r101_r50_fpn_1x_coco.py', 256, 2, 8),
    'cwd-seg': ('configs/cwd/cwd_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 128, 2,
                8),
    'pkd-det': ('configs/pkd/pkd_retinanet_r101_r50_fpn_2x_coco.py', 256, 2, 8),
    'dist-cls': ('configs/dist/dist_resnet34_resnet18_8xb32_in1k.py', 64, 16, 20),
    'dist-seg': ('configs/dist/dist_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py', 128,
                 2, 8),
}


def load_model_cfg(config: str) -> dict:
    """The ``model`` entry of a config file, as a plain dict, with every pretrained-weight
    reference of the student and the teacher removed (nothing is downloaded; the script gives
    the teacher a checkpoint)."""
    cfg = Config.fromfile(config)
    if 'model' not in cfg:
        raise KeyError(f'{config} has no `model` entry.')
    model_cfg = cfg.model.to_dict()
    for role in ('architecture', 'teacher'):
        if isinstance(model_cfg.get(role), dict):
            model_cfg[role] = strip_pretrained_init(model_cfg[role])
            if 'cfg_path' in model_cfg[role]:
                model_cfg[role]['pretrained'] = False
    return model_cfg


def random_teacher(model_cfg: dict, seed: int = 0) -> nn.Module:
    """``model_cfg`` built with seeded random weights, as a stand-in for a trained teacher.

    Benchmarks time the arithmetic, which does not depend on the weights' values. The BN affine
    parameters are drawn at random as well (scale in [0.5, 1.5], shift N(0, 0.1)), as in a
    trained network: the stock initialisation sets the last BN of every residual block to zero
    (``zero_init_residual``), which gives MMRazor's OFD margin a division by zero.
    """
    torch.manual_seed(seed)
    model = build_model_from_cfg(copy.deepcopy(model_cfg), 'teacher')
    if hasattr(model, 'init_weights'):
        model.init_weights()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return model


def save_random_checkpoint(model_cfg: dict, path: str, seed: int = 0) -> str:
    """Save the weights of :func:`random_teacher` to ``path``; returns ``path``."""
    torch.save({'state_dict': random_teacher(model_cfg, seed).state_dict()}, path)
    return path


def calibrate_teacher_bn(algorithm: nn.Module, data: dict) -> None:
    """Give the random teacher of ``algorithm`` the running BN statistics of a preprocessed
    batch ``data``, as a trained teacher's fit its data.

    With eval-mode BN and the statistics of a fresh network (mean 0, variance 1), activations
    grow through every residual block of a random deep network: RetinaNet R-101's stage 3
    reaches ~1.5e6 at 256 px, its OFD losses ~1e11, and the student trained on them holds
    inf/NaN after two SGD steps (float16 overflows in the teacher's forward at once). A step
    would then be timed on numbers no training sees. A teacher in ``teacher_norm_mode='train'``
    normalises with batch statistics: left alone.
    """
    from torch.nn.modules.batchnorm import _BatchNorm
    if getattr(algorithm, 'teacher_norm_mode', 'eval') == 'train':
        return
    norms = [m for m in algorithm.teacher.modules()
             if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calls
        norm.train()
    with torch.no_grad():
        algorithm.teacher(data['inputs'], data['data_samples'], mode='tensor')
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    algorithm.train()  # the teacher back in its norm mode


#: The build-time dry run (on the CPU, before the model moves to its device) runs at the input
#: size, each side capped to this: connectors take channels from it, not spatial sizes, except
#: those sized to a spatial grid (DearKD's aligner), whose configs train below the cap.
DRY_RUN_MAX_SIDE = 256


def build_mmkd_algorithm(model_cfg: dict, teacher_ckpt: Optional[str], size: Size,
                         device: torch.device) -> torch.nn.Module:
    """A ``SingleTeacherDistill`` (or subclass) from ``model_cfg``, teacher weights from
    ``teacher_ckpt`` (``None``: ``model_cfg['teacher']`` is a module with its weights), dry run
    at ``size`` (sides capped to :data:`DRY_RUN_MAX_SIDE`), on ``device`` in train mode."""
    cfg = copy.deepcopy(model_cfg)
    height, width = (min(side, DRY_RUN_MAX_SIDE) for side in hw(size))
    cfg.update(teacher_ckpt=teacher_ckpt, dry_run_shape=(3, height, width))
    torch.manual_seed(0)
    algorithm = MODELS.build(cfg)
    algorithm.init_weights()
    return algorithm.to(device).train()


def optim_wrapper_for(model: torch.nn.Module, amp: bool, dtype: str = 'float16') -> object:
    """An OptimWrapper, or with ``amp`` mmengine's AmpOptimWrapper (autocast to ``dtype``,
    dynamic loss scaling), with :data:`OPTIMIZER`; an mmkd algorithm's teacher is left out by
    mmkd's constructor, as in training."""
    cfg = dict(type='OptimWrapper', optimizer=copy.deepcopy(OPTIMIZER))
    if amp:
        cfg.update(type='AmpOptimWrapper', dtype=dtype, loss_scale='dynamic')
    return build_optim_wrapper(model, cfg)


def train_step_fn(model: torch.nn.Module, optim_wrapper, batches: List[dict]
                  ) -> Callable[[int], object]:
    """The function that runs one training step (preprocessing, forward, backward, update) on
    the batch of a round, as mmengine's ``IterBasedTrainLoop`` does."""
    return lambda index: model.train_step(batches[index % len(batches)], optim_wrapper)


# -- the limit: plain student step and teacher forward up to its last tap ----------------------
class _StopForward(Exception):
    """Raised by the hook on the teacher's last tapped module."""


def _raise_stop(*args) -> None:
    raise _StopForward()


def plain_student(model_cfg: dict, algorithm: nn.Module) -> nn.Module:
    """A hook-free student with the algorithm's student weights."""
    cfg = copy.deepcopy(model_cfg['architecture'])
    if isinstance(model_cfg.get('data_preprocessor'), dict):
        cfg['data_preprocessor'] = copy.deepcopy(model_cfg['data_preprocessor'])
    student = build_model_from_cfg(cfg, 'student')
    student.load_state_dict(algorithm.student.state_dict())
    return student.to(next(algorithm.parameters()).device).train()


def plain_teacher(model_cfg: dict, algorithm: nn.Module) -> nn.Module:
    """A hook-free teacher with the algorithm's teacher weights and BN mode."""
    teacher = build_model_from_cfg(copy.deepcopy(model_cfg['teacher']), 'teacher')
    teacher.load_state_dict(algorithm.teacher.state_dict())
    freeze(teacher)
    norm_mode = getattr(algorithm, 'teacher_norm_mode', 'eval')
    if norm_mode == 'train':
        use_batch_statistics_without_updates(teacher)
    teacher.to(next(algorithm.parameters()).device)
    set_teacher_mode(teacher, norm_mode, training=True)
    return teacher


TapPoint = Tuple[str, str]  # (module name, 'pre' or 'post': before or after it runs)


def _tap_points(algorithm: nn.Module) -> Optional[List[TapPoint]]:
    """Where each teacher tap completes; ``None`` when a tap is a function."""
    points = []
    for recorder in algorithm.distiller.teacher_recorders.recorders.values():
        if isinstance(recorder, FunctionOutputsRecorder):
            return None
        if isinstance(recorder, MethodOutputsRecorder):
            points.append((recorder.source.rpartition('.')[0], 'post'))
        elif isinstance(recorder, ModuleInputsRecorder):
            points.append((recorder.source, 'pre'))
        else:
            points.append((recorder.source, 'post'))
    return points


def _hook(module: nn.Module, when: str, fn: Callable) -> object:
    if when == 'pre':
        return module.register_forward_pre_hook(fn)
    return module.register_forward_hook(fn)


def last_tap_point(teacher: nn.Module, algorithm: nn.Module, inputs: torch.Tensor,
                   data_samples) -> Optional[TapPoint]:
    """The teacher tap that completes last in a forward pass."""
    points = _tap_points(algorithm)
    if points is None:
        return None
    order: List[TapPoint] = []
    handles = [_hook(get_submodule(teacher, name, 'teacher'), when,
                     lambda *args, point=(name, when): order.append(point))
               for name, when in set(points)]
    try:
        with torch.no_grad():
            teacher(inputs, data_samples, mode='tensor')
    finally:
        for handle in handles:
            handle.remove()
    return order[-1] if order else None


def modules_after_last_tap(teacher: nn.Module, algorithm: nn.Module, inputs: torch.Tensor,
                           data_samples) -> Optional[List[str]]:
    """The teacher's modules that a full forward starts only after its last tap completed.

    A distillation step never needs them: with ``stop_teacher_early`` none of them may run.
    ``teacher`` may be the algorithm's own (its recorders are inert outside a step).

    Returns:
        list | None: Module names in call order; ``None`` when a tap is a function (then the
        whole forward is needed).
    """
    stop_at = last_tap_point(teacher, algorithm, inputs, data_samples)
    if stop_at is None:
        return None
    started: List[str] = []
    completed: List[int] = []
    handles = [module.register_forward_pre_hook(lambda *args, name=name: started.append(name))
               for name, module in teacher.named_modules() if name]
    handles.append(_hook(get_submodule(teacher, stop_at[0], 'teacher'), stop_at[1],
                         lambda *args: completed.append(len(started))))
    try:
        with torch.no_grad():
            teacher(inputs, data_samples, mode='tensor')
    finally:
        for handle in handles:
            handle.remove()
    before = set(started[:completed[-1]])
    after = dict.fromkeys(name for name in started[completed[-1]:] if name not in before)
    return list(after)


def teacher_forward_fn(teacher: nn.Module, stop_at: Optional[TapPoint], device: torch.device,
                       amp: bool, preprocessed: List[dict]) -> Callable[[int], None]:
    """(b): the teacher's forward under ``no_grad``, stopped at ``stop_at``."""
    if stop_at is not None:
        _hook(get_submodule(teacher, stop_at[0], 'teacher'), stop_at[1], _raise_stop)

    def step(index: int) -> None:
        data = preprocessed[index % len(preprocessed)]
        with torch.no_grad(), autocast(device, amp):
            try:
                teacher(data['inputs'], data['data_samples'], mode='tensor')
            except _StopForward:
                pass
    return step
