"""Check mmkd on a machine with NVIDIA GPUs in one command, and write the findings as markdown.

    python tools/gpu_check.py --out work_dirs/gpu_check/gpu_check.md      # CUDA, budget 425 s
    python tools/gpu_check.py --device cpu --quick --out /tmp/report.md  # CI: test_gpu_check.py

Sections, in this order, each in a process of its own with a time budget (``--budget`` sets the
total: each section gets its floor and a share of the rest; time a section leaves unused goes
to the next, and the last one gets all that is left). A section that fails a check, crashes or
runs out of time is recorded with the tail of its output, and the next section runs. The report
is rewritten every few seconds while a section runs, so a run killed from outside leaves what
it had; the sections' output goes to the log beside it (``--log``). The report names the
commit under test (``benchmarks/_source.py``: ``MMKD_COMMIT``, ``.mmkd-commit`` or git).

``versions``
    Python, torch, CUDA, the GPUs, driver and nvcc, the OpenMMLab packages (versions and where
    they are, not imported: it stays cheap), what mmcv's ops were compiled with (CUDA version,
    GPU archs), and whether mmkd imports.
``ops``
    mmcv's CUDA ops against its CPU ops: ``nms`` at IoU 0.3/0.5/0.7 (and against torchvision),
    ``sigmoid_focal_loss`` against its formula (values and gradients; it has no CPU op),
    ``roi_align`` (values and gradients, and against torchvision). On the CPU: the CPU ops
    against torchvision.
``train``
    Every distillation config shipped in ``configs/<method>/`` (kd, fitnets, ofd, fsp, tekap,
    dearkd, ...) trained on synthetic batches (``benchmarks/_common.py``) with mmengine's
    ``train_step`` in fp32, fp16-AMP and bf16-AMP (``AmpOptimWrapper``; on the CPU fp32 and
    bfloat16 autocast): the losses are finite, the teacher's modules after its last tap never
    run (forward calls counted with hooks), no teacher parameter gets a gradient, the
    student's parameters move. The random teacher gets the running BN statistics of the
    synthetic batch first (``benchmarks/_common.py``, ``calibrate_teacher_bn``).
``ddp``
    ``tools/dist_train.sh`` (torchrun) with one process per GPU (NCCL; on the CPU gloo and one
    process) on a small distillation config for 2 iterations: it finishes and saves.
``overhead``
    ``benchmarks/step_overhead.py`` in fp32 and AMP (CUDA) at realistic sizes: 224 px batch 64
    (cls), 800x1333 batch 2 (det), 512x1024 batch 2 (seg).
``mmrazor``
    ``benchmarks/vs_mmrazor.py`` on both pairs (MMRazor from ``--mmrazor-dir``, never
    installed from the network here).

``--quick`` runs the same code at tiny sizes (1 iteration per precision, a few configs, one
round of each benchmark) so that CI can keep the script working on the CPU.
"""
import argparse
import contextlib
import datetime
import io
import math
import os
import os.path as osp
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SECTIONS = ('versions', 'ops', 'train', 'ddp', 'overhead', 'levers', 'mmrazor')
#: Folders of configs/ that hold no method's configs (the train section takes every other one).
NOT_METHOD_DIRS = ('_base_', 'digits', 'benchmarks')
#: Exit status of a section that ran to its end with a failed check (any other non-zero status
#: is a crash).
CHECK_FAILED = 3
POLL_S = 2.0

Size = Union[int, Tuple[int, int]]


# -- what each mode runs --------------------------------------------------------------------
@dataclass
class Plan:
    """Sizes, iterations and time budgets of one mode.

    Attributes:
        iters: Training iterations per config and precision.
        train_inputs: Task -> (input size, batch size) of the ``train`` section.
        configs: Configs of the ``train`` section (relative to the repository); ``None``: every
            distillation config of the methods' folders of configs/.
        overhead: (preset of ``benchmarks/_common.py`` or a config, size, batch size) for
            step_overhead.
        levers: (preset or config, size, batch size, lever names) for step_overhead's
            ``--levers``: the opt-in teacher options timed beside the default step.
        mmrazor: (pair, size, batch size, an mmkd config instead of the pair's or ``None``)
            for vs_mmrazor.
        rounds: Timed rounds of each benchmark.
        warmup: Untimed rounds first.
        budgets: Section -> seconds (the default; with ``--budget`` the weights of the time
            above the floors, see :func:`section_budgets`).
        floors: Section -> the seconds it gets at least (a slow start-up, e.g. importing
            torch and the OpenMMLab packages on a fresh machine, must not time a section out).
        workers: Processes that share the ``train`` section's configs (model building on the
            CPU overlaps with training on the GPU; on a CPU, the cores are used one each).
    """
    iters: int
    train_inputs: Dict[str, Tuple[Size, int]]
    configs: Optional[Tuple[str, ...]]
    overhead: Tuple[Tuple[str, Size, int], ...]
    levers: Tuple[Tuple[str, Size, int, Tuple[str, ...]], ...]
    mmrazor: Tuple[Tuple[str, Size, int, Optional[str]], ...]
    rounds: int
    warmup: int
    budgets: Dict[str, float] = field(default_factory=dict)
    floors: Dict[str, float] = field(default_factory=dict)
    workers: int = 1


FULL = Plan(
    iters=20,
    train_inputs=dict(cls=(224, 16), det=(512, 2), seg=(512, 2)),
    configs=None,
    # the detector last in each benchmark: the slowest to build and run, it gets what is left
    overhead=(('ofd-cls', 224, 64), ('ofd-seg', (512, 1024), 2), ('ofd-det', (800, 1333), 2)),
    levers=(('ofd-cls', 224, 64, ('bf16-teacher', 'channels-last', 'inference-teacher',
                                  'bf16-teacher+channels-last+inference-teacher')), ),
    mmrazor=(('cls', 224, 64, None), ('det', (800, 1333), 2, None)),
    rounds=5,
    warmup=2,
    # on an H200 with 16 cores (docs/performance.md, "CUDA"): versions over 10 s, ops 16 s,
    # train 74 s, ddp 48 s, overhead 56 s and mmrazor over 66 s, both with failing det rows;
    # on an H100 (b0c9704): ops 18 s, train over 91 s (24 configs), levers 36 s, overhead 70 s
    budgets=dict(versions=30, ops=20, train=130, ddp=50, overhead=80, levers=45, mmrazor=70),
    floors=dict(versions=30, ops=15, train=60, ddp=40, overhead=40, levers=30, mmrazor=30),
    workers=4)

QUICK = Plan(
    iters=1,
    train_inputs=dict(cls=(32, 2), det=(64, 2), seg=(64, 2)),
    configs=('configs/kd/kd_resnet34_resnet18_8xb32_in1k.py',
             'configs/fitnets/fitnets_retinanet_r101_r50_fpn_1x_coco.py',
             'configs/fitnets/fitnets_pspnet_r101-d8_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    overhead=(('configs/digits/ofd_resnet18_w32_w4.py', 32, 2), ),
    levers=(('configs/digits/ofd_resnet18_w32_w4.py', 32, 2,
             ('bf16-teacher+channels-last', )), ),
    mmrazor=(('cls', 32, 2, 'configs/digits/ofd_resnet18_w32_w4.py'), ),
    rounds=1,
    warmup=0,
    budgets=dict(versions=60, ops=60, train=300, ddp=180, overhead=180, levers=120,
                 mmrazor=180),
    workers=2)


def precisions(device: str) -> Tuple[str, ...]:
    """fp32 and the AMP dtypes: float16 and bfloat16 on CUDA, bfloat16 autocast on the CPU."""
    return ('fp32', 'fp16', 'bf16') if device == 'cuda' else ('fp32', 'bf16')


def size_arg(size: Size) -> str:
    return str(size) if isinstance(size, int) else f'{size[0]}x{size[1]}'


# -- a section's output: markdown rows and notes, flushed as they come ------------------------
class Fragment:
    """The markdown a section process writes: the main part (a table, usually) and notes
    below it, each in its own file, appended and flushed line by line so that the parent can
    show them while the section runs, or after it was killed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failures = 0
        for part in (path, path + '.notes'):
            open(part, 'w').close()

    def _append(self, path: str, text: str) -> None:
        with open(path, 'a') as f:
            f.write(text.rstrip('\n') + '\n')

    def write(self, text: str) -> None:
        self._append(self.path, text)

    def note(self, text: str) -> None:
        self._append(self.path + '.notes', text + '\n')

    def check(self, ok: bool) -> str:
        """'ok' or 'FAIL' (counted)."""
        if not ok:
            self.failures += 1
        return 'ok' if ok else '**FAIL**'

    def error(self, what: str, error: BaseException) -> str:
        """Count a failure, note the traceback's tail, return a one-line summary."""
        self.failures += 1
        self.note(f'{what}:\n\n```\n{traceback_tail(error)}\n```')
        return f'**ERROR** {type(error).__name__}: {one_line(str(error))}'


def one_line(text: str, limit: int = 160) -> str:
    line = ' '.join(text.split()).replace('|', '\\|')
    return line if len(line) <= limit else line[:limit - 3] + '...'


def traceback_tail(error: BaseException, lines: int = 25) -> str:
    text = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
    return '\n'.join(text.rstrip().splitlines()[-lines:])


def read_fragment(path: str) -> Tuple[str, str]:
    def read(part: str) -> str:
        try:
            with open(part) as f:
                return f.read().rstrip('\n')
        except OSError:
            return ''
    return read(path), read(path + '.notes')


# -- section: versions ------------------------------------------------------------------------
#: distribution name -> module name.
PACKAGES = {'numpy': 'numpy', 'torchvision': 'torchvision', 'mmengine': 'mmengine',
            'mmcv': 'mmcv', 'mmdet': 'mmdet', 'mmsegmentation': 'mmseg',
            'mmpretrain': 'mmpretrain', 'transformers': None, 'setuptools': None}


def command_output(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f'unavailable ({type(error).__name__})'
    return (done.stdout.strip() or done.stderr.strip() or f'exit {done.returncode}')


def distribution_version(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'not installed'


def module_location(module: str) -> str:
    """Where a top-level package would be imported from, without importing it."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as error:
        return f'not importable: {type(error).__name__}'
    if spec is None:
        return 'not importable'
    return f'at {osp.dirname(spec.origin) if spec.origin else "?"}'


def import_status(module: str) -> Tuple[bool, str]:
    import importlib
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 (recorded: this is what the section reports)
        return False, f'import fails: {type(error).__name__}: {one_line(str(error))}'
    return True, f'imports from {osp.dirname(getattr(imported, "__file__", "") or "?")}'


def mmcv_ops_values() -> Tuple[bool, str, str]:
    """mmcv's compiled CUDA version and compiler, from ``mmcv.ops`` in a process of its own:
    (ok, CUDA version, compiler) or (False, what failed, ''). On the H100 run of b0c9704 these
    calls ended the section's process with SIGSEGV after mmkd had been imported; in a child
    process a crash is one row of the report."""
    code = ('from mmcv.ops import get_compiler_version, get_compiling_cuda_version\n'
            'print(get_compiling_cuda_version()); print(get_compiler_version())')
    try:
        done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f'mmcv.ops unavailable ({type(error).__name__})', ''
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and len(lines) >= 2:
        return True, lines[-2], lines[-1]
    signal = f' (signal {-done.returncode})' if done.returncode < 0 else ''
    tail = one_line(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else ''
    return False, f'mmcv.ops build info failed: exit {done.returncode}{signal} {tail}'.strip(), ''


def mmcv_build_info(frag: Fragment, device: str) -> None:
    import importlib.util
    cuda_ok, cuda, compiler = mmcv_ops_values()
    frag.write(f'| mmcv ops compiled with | CUDA {cuda}, {compiler} | '
               f'{frag.check(cuda_ok and (device != "cuda" or cuda != "not available"))} |')
    spec = importlib.util.find_spec('mmcv')
    folder = osp.dirname(spec.origin) if spec and spec.origin else None
    ext = [osp.join(folder, f) for f in os.listdir(folder)
           if f.startswith('_ext') and f.endswith('.so')] if folder else []
    if ext and shutil.which('cuobjdump'):
        listing = command_output(['cuobjdump', '--list-elf', ext[0]])
        archs = sorted({word.split('.')[-2] for word in listing.split() if '.sm_' in word})
        frag.write(f'| mmcv GPU code | {", ".join(archs) or "none"} | |')


def section_versions(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    frag.write('| what | found | check |\n|---|---|---|')
    frag.write(f'| Python | {sys.version.split()[0]} ({sys.executable}) | |')
    frag.write(f'| machine | {platform.platform()}, {os.cpu_count()} CPU cores | |')
    import torch
    frag.write(f'| torch | {torch.__version__} (CUDA {torch.version.cuda}, cuDNN '
               f'{torch.backends.cudnn.version()}) | |')
    cuda_ok = torch.cuda.is_available()
    if args.device == 'cuda' or cuda_ok:
        count = torch.cuda.device_count() if cuda_ok else 0
        frag.write(f'| GPUs | {count} | {frag.check(count > 0 or args.device != "cuda")} |')
        for index in range(count):
            props = torch.cuda.get_device_properties(index)
            frag.write(f'| GPU {index} | {props.name}, {props.total_memory / 2**30:.0f} GiB, '
                       f'compute capability {props.major}.{props.minor} | |')
        driver = command_output(['nvidia-smi', '--query-gpu=driver_version',
                                 '--format=csv,noheader'])
        frag.write(f'| driver | {one_line(driver.splitlines()[0] if driver else "?")} | |')
        nvcc = shutil.which('nvcc') or osp.join(os.environ.get('CUDA_HOME', '/usr/local/cuda'),
                                                'bin', 'nvcc')
        frag.write(f'| nvcc | {one_line(command_output([nvcc, "--version"]).splitlines()[-1])} '
                   f'({nvcc}) | |')
    # mmkd is imported, as a user imports it (it works around what breaks some packages' own
    # imports, and applies its shims); the others are only located: importing each of them
    # takes seconds on a fresh machine, and the other sections import what they use.
    ok, status = import_status('mmkd')
    frag.write(f'| mmkd | {status} | {frag.check(ok)} |')
    for dist, module in PACKAGES.items():
        version = distribution_version(dist)
        status = ''
        if module and version != 'not installed':
            status = f' ({module_location(module)})'
        frag.write(f'| {dist} | {version}{status} | |')
    try:
        mmcv_build_info(frag, args.device)
    except Exception as error:  # noqa: BLE001 (recorded: what the section reports)
        frag.write(f'| mmcv ops | {frag.error("mmcv ops", error)} | |')


# -- section: ops -----------------------------------------------------------------------------
def random_boxes(count: int, generator, size: float = 1000.0):
    import torch
    xy = torch.rand((count, 2), generator=generator) * size
    wh = torch.rand((count, 2), generator=generator) * size / 10 + 1
    return torch.cat([xy, xy + wh], dim=1)


def median_ms(fn: Callable[[], object], calls: int = 20) -> float:
    import statistics
    import torch
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def check_nms(frag: Fragment, cuda: bool) -> None:
    import torch
    import torchvision
    from mmcv.ops import nms
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(2000, generator)
    scores = torch.rand(2000, generator=generator)
    for iou in (0.3, 0.5, 0.7):
        keep_cpu = nms(boxes, scores, iou)[1]
        keep_tv = torchvision.ops.nms(boxes, scores, iou)
        frag.write(f'| nms IoU {iou} | mmcv CPU vs torchvision | {len(keep_cpu)} vs '
                   f'{len(keep_tv)} kept | {frag.check(torch.equal(keep_cpu, keep_tv))} |')
        if cuda:
            boxes_gpu, scores_gpu = boxes.cuda(), scores.cuda()
            keep_gpu = nms(boxes_gpu, scores_gpu, iou)[1].cpu()
            ms = median_ms(lambda: nms(boxes_gpu, scores_gpu, iou))
            frag.write(f'| nms IoU {iou} | mmcv CUDA vs mmcv CPU | {len(keep_gpu)} kept, '
                       f'{ms:.2f} ms a call (2,000 boxes) | '
                       f'{frag.check(torch.equal(keep_gpu, keep_cpu))} |')


#: float32's unit roundoff.
FLOAT32_ROUNDOFF = 2.0 ** -24


def focal_reference(logits, target, gamma: float, alpha: float):
    """Sigmoid focal loss per element (N, C) and its gradient, exact to float64 (log-sigmoid,
    no cancellation); ``target`` is a class index, C meaning background."""
    import torch
    import torch.nn.functional as F
    x = logits.detach().double().cpu().requires_grad_(True)
    one_hot = F.one_hot(target.cpu(), x.size(1) + 1)[:, :-1].double()
    prob = x.sigmoid()
    loss = (-alpha * one_hot * (1 - prob).pow(gamma) * F.logsigmoid(x)
            - (1 - alpha) * (1 - one_hot) * prob.pow(gamma) * F.logsigmoid(-x))
    grad, = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def focal_loss_agreement(loss, grad, logits, target, gamma: float, alpha: float
                         ) -> Tuple[float, float, float]:
    """How far a float32 sigmoid focal loss (values and gradient, (N, C)) is from the exact one.

    mmcv's kernel computes ``p = sigmoid(x)`` in float32 and then ``log(1 - p)`` and
    ``log(p)``: ``1 - p`` cancels for large logits, its error (about one rounding of ``p``)
    grows relative to it like ``e^x``, so ``log(1 - p)`` is off by up to ~``eps / (1 - p)``
    (on an H200, N(0, 3^2) logits: 1.9e-3 at most; the kernel's arithmetic in float32 on the
    CPU gives the same, at a logit of 11.1, where the loss is 8.3). Each
    element is therefore held to a few float32 roundings of its own terms: ``8 eps (|loss| +
    (1 - alpha) p^gamma / (1 - p) + alpha (1 - p)^gamma / p)``, which is that cancellation and
    nothing more. A wrong kernel (alpha or gamma misread, the wrong class, a sign) is off by a
    good part of the loss itself on most elements, thousands of times this tolerance.
    The gradient's formula, ``(1 - p) log(1 - p)``, does not cancel: ``1e-6 + 8 eps |grad|``.

    Returns:
        tuple: (max abs difference of the loss, of the gradient, largest ratio of a
        difference to its tolerance: the check passes when it is at most 1).
    """
    reference, reference_grad = focal_reference(logits, target, gamma, alpha)
    p = logits.detach().double().cpu().sigmoid()
    eps = FLOAT32_ROUNDOFF
    tolerance = 8 * eps * (reference.abs() + (1 - alpha) * p.pow(gamma) / (1 - p)
                           + alpha * (1 - p).pow(gamma) / p) + 1e-7
    grad_tolerance = 1e-6 + 8 * eps * reference_grad.abs()
    loss_diff = (loss.detach().double().cpu() - reference).abs()
    grad_diff = (grad.detach().double().cpu() - reference_grad).abs()
    ratio = max((loss_diff / tolerance).max().item(), (grad_diff / grad_tolerance).max().item())
    return loss_diff.max().item(), grad_diff.max().item(), ratio


def check_focal_loss(frag: Fragment, cuda: bool) -> None:
    import torch
    from mmcv.ops import sigmoid_focal_loss
    if not cuda:
        frag.write('| sigmoid_focal_loss | CUDA op vs formula | not run: mmcv has no CPU op '
                   '(mmdet uses its Python formula there) | |')
        return
    generator = torch.Generator().manual_seed(1)
    logits = (torch.randn((512, 80), generator=generator) * 3).cuda()
    target = torch.randint(0, 81, (512, ), generator=generator).cuda()
    leaf = logits.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(leaf, target, 2.0, 0.25, None, 'none')
    loss.sum().backward()
    loss_diff, grad_diff, ratio = focal_loss_agreement(loss, leaf.grad, logits, target, 2.0,
                                                       0.25)
    frag.write(f'| sigmoid_focal_loss | mmcv CUDA vs exact (float64; 512x80 logits N(0, 3^2), '
               f'gamma 2, alpha 0.25) | max abs diff {loss_diff:.1e} (loss), {grad_diff:.1e} '
               f'(gradient); worst element at {ratio:.2f} of its float32 tolerance | '
               f'{frag.check(ratio <= 1)} |')


def dtype_name(tensor) -> str:
    return str(tensor.dtype).replace('torch.', '')


def check_bfloat16_autocast(frag: Fragment, cuda: bool) -> None:
    """mmkd's shim (mmkd/utils/compat.py): mmcv's ops without bfloat16 kernels, called on
    bfloat16 inputs under bfloat16 autocast, give the float32 op's result on the same values
    (rounded to bfloat16) and bfloat16 gradients."""
    import torch
    import mmkd  # noqa: F401 (applies the shim)
    from mmcv.ops import nms, roi_align, sigmoid_focal_loss
    device = 'cuda' if cuda else 'cpu'
    bf16 = torch.bfloat16
    generator = torch.Generator().manual_seed(3)
    features = torch.randn((2, 16, 32, 32), generator=generator)
    boxes = random_boxes(32, generator, size=120.0)
    rois = torch.cat([torch.randint(0, 2, (32, 1), generator=generator).float(), boxes], dim=1)
    logits = torch.randn((256, 20), generator=generator) * 3
    target = torch.randint(0, 21, (256, ), generator=generator)
    rois = rois.to(device, bf16)  # mmdet casts the RoIs to the features' dtype
    ops = {'roi_align': (lambda x: roi_align(x, rois.to(x.dtype), (7, 7), 0.25, 2, 'avg', True),
                         features)}
    if cuda:  # no CPU op
        ops['sigmoid_focal_loss'] = (lambda x: sigmoid_focal_loss(
            x, target.to(device), 2.0, 0.25, None, 'none'), logits)
    for name, (op, value) in ops.items():
        value = value.to(device, bf16)
        leaf = value.clone().requires_grad_(True)
        with torch.autocast(device, dtype=bf16):
            out = op(leaf)
        out.float().sum().backward()
        reference_leaf = value.float().requires_grad_(True)
        reference = op(reference_leaf)  # the float32 kernel, without autocast
        reference.sum().backward()
        same = (out.dtype == bf16 and leaf.grad.dtype == bf16
                and torch.equal(out, reference.to(bf16))
                and torch.equal(leaf.grad, reference_leaf.grad.to(bf16)))
        frag.write(f'| bfloat16 autocast: {name} | mmcv {device.upper()} on bfloat16 inputs '
                   f'vs the float32 op on the same values | output {dtype_name(out)}, '
                   f'gradient {dtype_name(leaf.grad)}; {"equal" if same else "differ"} | '
                   f'{frag.check(same)} |')
    boxes = random_boxes(300, generator, size=100.0)  # overlapping
    scores = torch.rand(300, generator=generator)
    with torch.autocast(device, dtype=bf16):
        keep = nms(boxes.to(device, bf16), scores.to(device, bf16), 0.5)[1]
    reference = nms(boxes.to(bf16).float().to(device), scores.to(bf16).float().to(device),
                    0.5)[1]
    frag.write(f'| bfloat16 autocast: nms | mmcv {device.upper()} on bfloat16 boxes and scores '
               f'vs the float32 op on the same values | {len(keep)} vs {len(reference)} kept | '
               f'{frag.check(torch.equal(keep, reference))} |')


def check_roi_align(frag: Fragment, cuda: bool) -> None:
    import torch
    import torchvision
    from mmcv.ops import roi_align
    generator = torch.Generator().manual_seed(2)
    features = torch.randn((2, 16, 64, 64), generator=generator)
    boxes = random_boxes(64, generator, size=240.0)
    rois = torch.cat([torch.randint(0, 2, (64, 1), generator=generator).float(), boxes], dim=1)

    def run(fn, device):
        leaf = features.clone().to(device).requires_grad_(True)  # a new leaf for each run
        out = fn(leaf, rois.to(device))
        out.backward(torch.ones_like(out))
        return out.detach().cpu(), leaf.grad.cpu()

    for ratio in (0, 2):
        def mmcv_op(x, r):
            return roi_align(x, r, (7, 7), 0.25, ratio, 'avg', True)

        def tv_op(x, r):
            return torchvision.ops.roi_align(x, r, (7, 7), 0.25, ratio, aligned=True)

        cpu = run(mmcv_op, 'cpu')
        others = [('torchvision CPU', run(tv_op, 'cpu'))]
        if cuda:
            others.insert(0, ('mmcv CUDA', run(mmcv_op, 'cuda')))
        for name, (out, grad) in others:
            diff = max((out - cpu[0]).abs().max().item(), (grad - cpu[1]).abs().max().item())
            frag.write(f'| roi_align 7x7, sampling_ratio {ratio} | {name} vs mmcv CPU (values '
                       f'and gradients) | max abs diff {diff:.1e} | {frag.check(diff < 1e-4)} |')


def section_ops(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    import torch
    cuda = args.device == 'cuda'
    if cuda and not torch.cuda.is_available():
        raise RuntimeError('--device cuda, but torch sees no CUDA device.')
    frag.write('| op | compared | found | check |\n|---|---|---|---|')
    for check in (check_nms, check_focal_loss, check_roi_align, check_bfloat16_autocast):
        try:
            check(frag, cuda)
        except Exception as error:  # noqa: BLE001 (recorded; the other ops still run)
            frag.write(f'| {check.__name__[6:]} | | {frag.error(check.__name__, error)} | |')


# -- section: train ---------------------------------------------------------------------------
def benchmark_module(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks share ``_common``)."""
    import importlib
    folder = osp.join(REPO, 'benchmarks')
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def distillation_configs() -> Tuple[List[str], List[str]]:
    """(configs with a teacher, the others) of every method's folder of configs/ (kd, fitnets,
    ofd, fsp, tekap, dearkd, ...), relative to the repository."""
    from mmengine.config import Config
    distill, other = [], []
    methods = sorted(name for name in os.listdir(osp.join(REPO, 'configs'))
                     if name not in NOT_METHOD_DIRS and osp.isdir(osp.join(REPO, 'configs', name)))
    for method in methods:
        folder = osp.join(REPO, 'configs', method)
        for name in sorted(os.listdir(folder)):
            if name.endswith('.py'):
                path = osp.join('configs', method, name)
                model = Config.fromfile(osp.join(REPO, path)).get('model', {})
                (distill if 'teacher' in model else other).append(path)
    return distill, other


TASK_OF_SCOPE = {'mmpretrain': 'cls', 'mmdet': 'det', 'mmseg': 'seg'}


def train_input(config: str, model_cfg: dict, plan: Plan) -> Tuple[str, Size, int]:
    """(task, size, batch size) of a config in the ``train`` section: the plan's for the task;
    a classification config whose dry run is smaller (CIFAR, 32 px) keeps its own size; a
    segmentor's preprocessor pads to the input size instead of the crop size."""
    from mmengine.config import Config
    scope = Config.fromfile(osp.join(REPO, config)).get('default_scope')
    task = TASK_OF_SCOPE[scope]
    size, batch = plan.train_inputs[task]
    dry_run = model_cfg.get('dry_run_shape')
    if task == 'cls' and dry_run and max(dry_run[1:]) < (size if isinstance(size, int)
                                                          else max(size)):
        size = tuple(dry_run[1:])
    if task == 'seg':
        height, width = (size, size) if isinstance(size, int) else size
        model_cfg['data_preprocessor'] = dict(model_cfg.get('data_preprocessor') or {},
                                              size=(height, width))
    return task, size, batch


def precision_run(algorithm, batches: list, precision: str, device, iters: int,
                  after: Optional[List[str]]) -> dict:
    """Train ``iters`` steps in ``precision``; what the checks need."""
    import torch
    from mmengine.runner.amp import autocast
    C = benchmark_module('_common')
    amp = precision != 'fp32' and device.type == 'cuda'
    dtype = dict(fp32='float32', fp16='float16', bf16='bfloat16')[precision]
    optim_wrapper = C.optim_wrapper_for(algorithm, amp, dtype)
    # a new context every step: mmengine's autocast is a generator context, entered once
    cpu_bf16 = precision == 'bf16' and device.type == 'cpu'
    context = ((lambda: autocast(device_type='cpu', dtype=torch.bfloat16)) if cpu_bf16
               else contextlib.nullcontext)
    teacher, student = algorithm.teacher, algorithm.student
    calls: Dict[str, int] = {}
    handles = [module.register_forward_pre_hook(
        lambda *hook_args, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, module in teacher.named_modules() if name]
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    losses = []
    C.synchronize(device)
    start = time.perf_counter()
    try:
        for index in range(iters):
            with context():
                log_vars = algorithm.train_step(batches[index % len(batches)], optim_wrapper)
            losses.append({key: float(torch.as_tensor(value).detach())
                           for key, value in log_vars.items()})
        C.synchronize(device)
    finally:
        for handle in handles:
            handle.remove()
    return dict(
        seconds=time.perf_counter() - start, losses=losses, calls=calls,
        after_called=[name for name in (after or []) if calls.get(name)],
        teacher_grads=[name for name, p in teacher.named_parameters()
                       if p.requires_grad or p.grad is not None],
        moved=sum(not torch.equal(p.detach(), before[name])
                  for name, p in student.named_parameters()),
        params=len(before))


def after_text(after: Optional[List[str]]) -> str:
    if after is None:
        return 'a function tap: the whole forward'
    tops = list(dict.fromkeys('.'.join(name.split('.')[:2]) if name.startswith('backbone.')
                              else name.split('.')[0] for name in after))
    shown = ', '.join(tops[:3]) + (', ...' if len(tops) > 3 else '')
    return f'{len(after)}' + (f' ({shown})' if after else '')


def train_config(frag: Fragment, config: str, plan: Plan, device, iters: int) -> None:
    """Build one config, train it in every precision, write one row per precision."""
    import copy
    import torch
    from mmengine.model import revert_sync_batchnorm
    C = benchmark_module('_common')
    model_cfg = C.load_model_cfg(osp.join(REPO, config))
    task, size, batch = train_input(config, model_cfg, plan)
    build_start = time.perf_counter()
    model_cfg['teacher'] = C.random_teacher(model_cfg['teacher'])
    algorithm = C.build_mmkd_algorithm(model_cfg, None, size, device)
    # mmengine's Runner does the same without DDP (stock seg configs use SyncBN).
    algorithm = revert_sync_batchnorm(algorithm).to(device)
    build_s = time.perf_counter() - build_start
    num_classes = C.num_classes_of(algorithm.student, task)
    batches = [C.make_batch(task, batch, size, num_classes, seed) for seed in range(2)]
    data = algorithm.data_preprocessor(copy.deepcopy(batches[0]), True)
    C.calibrate_teacher_bn(algorithm, data)
    after = C.modules_after_last_tap(algorithm.teacher, algorithm, data['inputs'],
                                     data['data_samples'])
    initial = copy.deepcopy(algorithm.state_dict())
    name = osp.relpath(config, 'configs')
    for precision in precisions(device.type):
        label = f'| {name} | {precision} | {C.size_text(size)} x {batch} |'
        try:
            algorithm.load_state_dict(initial)
            run = precision_run(algorithm, batches, precision, device, iters, after)
        except Exception as error:  # noqa: BLE001 (recorded; the next precision still runs)
            frag.write(f'{label} | | | | | {frag.error(f"{name} {precision}", error)} |')
            continue
        finite = all(math.isfinite(v) for step in run['losses'] for v in step.values())
        distill = [k for k in run['losses'][-1] if k != 'loss' and not k.startswith('student.')]
        total = [step.get('loss', float('nan')) for step in run['losses']]
        teacher_ran = sum(run['calls'].values()) > 0
        checks = [frag.check(finite), frag.check(teacher_ran and not run['after_called']),
                  frag.check(not run['teacher_grads']), frag.check(run['moved'] > 0)]
        frag.write(f'{label} {total[0]:.4g} -> {total[-1]:.4g} ({", ".join(distill)}) '
                   f'{checks[0]} | {after_text(after)}: {len(run["after_called"])} ran '
                   f'{checks[1]} | {len(run["teacher_grads"])} {checks[2]} | '
                   f'{run["moved"]}/{run["params"]} {checks[3]} | '
                   f'{run["seconds"]:.1f} s ({build_s:.0f} s build) |')
        if run['after_called']:
            frag.note(f'{name} {precision}: teacher modules after the last tap ran: '
                      f'{run["after_called"][:10]}')
        if run['teacher_grads']:
            frag.note(f'{name} {precision}: teacher parameters with gradients: '
                      f'{run["teacher_grads"][:10]}')
    algorithm.remove_recorders()
    del algorithm
    if device.type == 'cuda':
        torch.cuda.empty_cache()


TRAIN_HEADER = ('| config | precision | input x batch | loss, first -> last (distillation '
                'losses) | teacher modules after the last tap: ran | teacher params with '
                'grads | student params moved | time |\n|---|---|---|---|---|---|---|---|')


def section_train(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    C = benchmark_module('_common')
    device = C.setup(args.threads, args.device, amp=False)
    configs = list(args.configs or plan.configs or [])
    skipped = ''
    if not configs:
        configs, other = distillation_configs()
        skipped = (' Not distillation configs (no teacher), not trained: '
                   f'{", ".join(osp.relpath(c, "configs") for c in other) or "none"}.')
    if args.shard_index == 0:
        frag.note(f'{len(configs)} configs, {args.iters or plan.iters} iteration(s) per precision: '
                  f'{", ".join(osp.relpath(c, "configs") for c in configs)}.{skipped}')
        frag.write(TRAIN_HEADER)
    iters = args.iters or plan.iters
    for config in configs[args.shard_index::args.shards]:
        try:
            train_config(frag, config, plan, device, iters)
        except Exception as error:  # noqa: BLE001 (recorded; the next config still runs)
            name = osp.relpath(config, 'configs')
            frag.write(f'| {name} | | | {frag.error(name, error)} | | | | |')


# -- section: ddp -----------------------------------------------------------------------------
DDP_CONFIG = 'configs/digits/fitnets_resnet18_w32_w4.py'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def section_ddp(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    """tools/dist_train.sh on :data:`DDP_CONFIG` for 2 iterations on tiny image files."""
    import torch
    from mmengine.config import Config
    sys.path.insert(0, osp.join(REPO, 'tests'))
    from data_factory import cls_data_options, make_classification_dataset
    from helpers import save_checkpoint_of
    nproc = torch.cuda.device_count() if args.device == 'cuda' else 1
    frag.write('| what | found | check |\n|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        info = make_classification_dataset(osp.join(tmp, 'data'), num_images=8)
        cfg = Config.fromfile(osp.join(REPO, DDP_CONFIG))
        ckpt = save_checkpoint_of(dict(cfg.model.teacher), osp.join(tmp, 'teacher.pth'))
        cfg.merge_from_dict(dict(cls_data_options(info, max_iters=2, batch_size=4),
                                 **{'model.teacher_ckpt': ckpt}))
        config = osp.join(tmp, 'ddp_config.py')
        cfg.dump(config)
        work_dir = osp.join(tmp, 'work')
        cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, str(nproc),
               '--work-dir', work_dir]
        env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
        frag.write(f'| command | `{" ".join(["PYTHON=" + sys.executable, *cmd[1:]])}` '
                   f'({DDP_CONFIG}, 2 iterations) | |')
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        output = done.stdout + done.stderr
        print(output, flush=True)
        frag.write(f'| torchrun, {nproc} process(es), '
                   f'{"NCCL" if args.device == "cuda" else "gloo"} | exit {done.returncode} '
                   f'after {seconds:.0f} s | {frag.check(done.returncode == 0)} |')
        frag.write(f'| distributed | "Distributed training: True" in the log | '
                   f'{frag.check("Distributed training: True" in output)} |')
        saved = osp.isfile(osp.join(work_dir, 'iter_2.pth'))
        frag.write(f'| finished | iter_2.pth saved | {frag.check(saved)} |')
        losses = [line.strip() for line in output.splitlines() if 'Iter(train)' in line]
        if losses:
            frag.note('Last training log line: `' + one_line(losses[-1], 400) + '`')
        if done.returncode != 0:
            frag.note('Output tail:\n\n```\n' + '\n'.join(output.splitlines()[-30:]) + '\n```')


# -- sections: overhead, mmrazor ---------------------------------------------------------------
class Tee(io.TextIOBase):
    """Writes to stdout and keeps a copy."""

    def __init__(self) -> None:
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        sys.__stdout__.flush()
        return self.copy.write(text)


def benchmark_rows(frag: Fragment, module_name: str, runs: List[Tuple[str, List[str]]],
                   notes: Callable[[str], None] = lambda output: None,
                   summary_name: str = 'summary') -> None:
    """Run ``module.main(argv)`` for each (label, argv), the rows of the module's
    ``summary_name`` function (a markdown table of results) for each."""
    import gc
    import torch
    module = benchmark_module(module_name)
    summary = getattr(module, summary_name)
    frag.write(summary({}))
    for label, argv in runs:
        tee = Tee()
        try:
            with contextlib.redirect_stdout(tee):
                results = module.main(argv)
            rows = summary({f'{label}, {name}': r for name, r in results.items()})
            frag.write('\n'.join(rows.splitlines()[2:]))
        except Exception as error:  # noqa: BLE001 (recorded; the next run still goes)
            frag.write(f'| {label} | {frag.error(label, error)} |')
        notes(tee.copy.getvalue())
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def common_benchmark_args(args: argparse.Namespace, plan: Plan, size: Size, batch: int
                          ) -> List[str]:
    return ['--device', args.device, '--size', size_arg(size), '--batch-size', str(batch),
            '--rounds', str(plan.rounds), '--warmup', str(plan.warmup), '--num-batches', '2',
            '--threads', str(args.threads)]


def section_overhead(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    amps = (False, True) if args.device == 'cuda' else (False, )
    runs = [(f'{"AMP fp16" if amp else "fp32"} {size_arg(size)} x {batch}',
             preset_args(preset) + common_benchmark_args(args, plan, size, batch)
             + (['--amp'] if amp else []))
            for preset, size, batch in plan.overhead for amp in amps]
    frag.note(f'`benchmarks/step_overhead.py`: the median of {plan.rounds} timed round(s) '
              f'after {plan.warmup} untimed, in seconds; the columns are those of '
              'docs/performance.md.')
    benchmark_rows(frag, 'step_overhead', runs)


def preset_args(preset: str) -> List[str]:
    """step_overhead's arguments for a preset name or a config path."""
    return [osp.join(REPO, preset)] if preset.endswith('.py') else ['--preset', preset]


def section_levers(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    runs = [(f'fp32 {size_arg(size)} x {batch}',
             preset_args(preset) + common_benchmark_args(args, plan, size, batch)
             + ['--levers', *levers])
            for preset, size, batch, levers in plan.levers]
    frag.note('`benchmarks/step_overhead.py --levers`: the opt-in teacher options '
              '(docs/performance.md, "Issue 14") timed beside the default step in the same '
              f'rounds; medians of {plan.rounds} timed round(s) after {plan.warmup} untimed.')
    benchmark_rows(frag, 'step_overhead', runs, summary_name='lever_summary')


def section_mmrazor(frag: Fragment, args: argparse.Namespace, plan: Plan) -> None:
    runs = [(f'fp32 {size_arg(size)} x {batch}',
             ['--pairs', pair, '--mmrazor-dir', args.mmrazor_dir, '--no-install',
              *(['--config', osp.join(REPO, config)] if config else []),
              *common_benchmark_args(args, plan, size, batch)])
            for pair, size, batch, config in plan.mmrazor]
    seen = set()

    def notes(output: str) -> None:
        for line in output.splitlines():
            if line.startswith(('MMRazor', 'private torch names', 'with mmrazor')) \
                    and line not in seen:
                seen.add(line)
                frag.note(one_line(line, 400))
    benchmark_rows(frag, 'vs_mmrazor', runs, notes)


SECTION_FUNCTIONS = dict(versions=section_versions, ops=section_ops, train=section_train,
                         ddp=section_ddp, overhead=section_overhead, levers=section_levers,
                         mmrazor=section_mmrazor)


def run_section_here(args: argparse.Namespace, plan: Plan) -> int:
    """The body of a section process: exit 0 (passed), CHECK_FAILED, or 2 (crashed)."""
    frag = Fragment(args.fragment)
    try:
        SECTION_FUNCTIONS[args.section](frag, args, plan)
    except BaseException as error:  # noqa: BLE001 (recorded, then the process fails)
        traceback.print_exc()
        frag.note(f'The section stopped:\n\n```\n{traceback_tail(error)}\n```')
        return 2
    return CHECK_FAILED if frag.failures else 0


# -- the parent: one process per section, the report ------------------------------------------
@dataclass
class SectionState:
    name: str
    budget: float
    status: str = 'not run'
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    fragments: List[str] = field(default_factory=list)
    log_tail: str = ''


class Report:
    """The markdown report, rewritten whole at every update."""

    def __init__(self, path: str, header: str, states: List[SectionState]) -> None:
        self.path, self.header, self.states = path, header, states

    def render(self) -> str:
        lines = [self.header, '', '| section | result | time | CPU time | budget |',
                 '|---|---|---|---|---|']
        for s in self.states:
            lines.append(f'| [{s.name}](#{s.name}) | {s.status} | {s.seconds:.0f} s | '
                         f'{s.cpu_seconds:.0f} s | {s.budget:.0f} s |')
        for s in self.states:
            if s.status == 'not run':
                continue
            lines += ['', f'## {s.name}', '', f'Result: {s.status} ({s.seconds:.0f} s).', '']
            parts = [read_fragment(path) for path in s.fragments]
            lines += [main for main, _ in parts if main]
            notes = [note for _, note in parts if note]
            if notes:
                lines += [''] + notes
            if s.log_tail:
                lines += ['', 'Output tail:', '', '```', s.log_tail, '```']
        return '\n'.join(lines) + '\n'

    def write(self) -> None:
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(self.render())
        os.replace(tmp, self.path)


def section_argv(args: argparse.Namespace, name: str, fragment: str, shard: int,
                 shards: int) -> List[str]:
    argv = [sys.executable, osp.abspath(__file__), '--section', name, '--fragment', fragment,
            '--shard', f'{shard}/{shards}', '--device', args.device, '--threads',
            str(args.threads), '--mmrazor-dir', args.mmrazor_dir]
    if args.quick:
        argv.append('--quick')
    if args.iters:
        argv += ['--iters', str(args.iters)]
    if args.configs:
        argv += ['--configs', *args.configs]
    return argv


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the parent (e.g. ``timeout``)."""


def _interrupt(signum, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def children_cpu_seconds() -> float:
    """User + system CPU seconds of the ended child processes (and theirs)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_section(args: argparse.Namespace, state: SectionState, deadline: float,
                workdir: str, log, report: Report) -> None:
    """Run one section in ``shards`` processes until they end or ``deadline`` passes."""
    shards = args.workers if state.name == 'train' else 1
    threads = max(1, (os.cpu_count() or 2) // shards) if shards > 1 else args.threads
    procs = []
    state.status, start = 'running', time.monotonic()
    cpu_start = children_cpu_seconds()
    for shard in range(shards):
        fragment = osp.join(workdir, f'{state.name}-{shard}.md')
        part_log = open(osp.join(workdir, f'{state.name}-{shard}.log'), 'w')
        sub_args = argparse.Namespace(**dict(vars(args), threads=threads))
        procs.append((subprocess.Popen(
            section_argv(sub_args, state.name, fragment, shard, shards), stdout=part_log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED='1')), part_log))
        state.fragments.append(fragment)
    timed_out, interrupted = False, None
    try:
        while any(p.poll() is None for p, _ in procs):
            if time.monotonic() > deadline:
                timed_out = True
                break
            state.seconds = time.monotonic() - start
            report.write()
            time.sleep(POLL_S)
    except Interrupted as error:
        interrupted = error
    finally:
        for p, _ in procs:
            kill_group(p)
    state.seconds = time.monotonic() - start
    state.cpu_seconds = children_cpu_seconds() - cpu_start
    codes = [p.returncode for p, _ in procs]
    tails = []
    for shard, (p, part_log) in enumerate(procs):
        part_log.close()
        with open(part_log.name) as f:
            output = f.read()
        log.write(f'\n===== {state.name} (process {shard + 1}/{shards}, exit {p.returncode}) '
                  f'=====\n{output}')
        log.flush()
        tails.append('\n'.join(output.rstrip().splitlines()[-40:]))
    if interrupted is not None:
        state.status = f'**INTERRUPTED** ({interrupted}) after {state.seconds:.0f} s'
    elif timed_out:
        state.status = f'**TIMED OUT** after {state.seconds:.0f} s'
    elif all(code == 0 for code in codes):
        state.status = 'passed'
    elif all(code in (0, CHECK_FAILED) for code in codes):
        state.status = '**FAILED** (see the checks)'
    else:
        state.status = f'**CRASHED** (exit {", ".join(map(str, codes))})'
    if state.status != 'passed':
        state.log_tail = '\n\n'.join(tails)
    if interrupted is not None:
        raise interrupted


def section_budgets(plan: Plan, sections: Sequence[str],
                    total: Optional[float] = None) -> Dict[str, float]:
    """Seconds for each section: the plan's, or for a ``total``, each section's floor plus a
    share of the rest in proportion to its budget above its floor. When the floors alone exceed
    ``total``, each gets its floor and the run's end (``total``) cuts the last ones."""
    budgets = {name: float(plan.budgets[name]) for name in sections}
    if total is None:
        return budgets
    floors = {name: min(plan.floors.get(name, 0.0), budgets[name]) for name in sections}
    spare = max(total, 0.0) - sum(floors.values())
    if spare <= 0:
        return floors
    above = {name: budgets[name] - floors[name] for name in sections}
    weight = sum(above.values())
    return {name: floors[name] + spare * (above[name] / weight if weight else 1 / len(sections))
            for name in sections}


def run_all(args: argparse.Namespace, plan: Plan) -> int:
    sections = args.sections or list(SECTIONS)
    budgets = section_budgets(plan, sections, args.budget)
    states = [SectionState(name, budgets[name]) for name in sections]
    total = sum(budgets.values()) if args.budget is None else max(args.budget, 0)
    out = osp.abspath(args.out)
    os.makedirs(osp.dirname(out), exist_ok=True)
    log_path = args.log or osp.splitext(out)[0] + '.log'
    header = (f'# mmkd GPU check\n\n`{" ".join([osp.basename(sys.executable), *sys.argv])}`, '
              f'started {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on '
              f'{platform.node()} ({os.cpu_count()} CPU cores); device {args.device}'
              f'{", quick" if args.quick else ""}; budget {total:.0f} s. Commit: '
              f'{source_commit()}.')
    report = Report(out, header, states)
    report.write()
    start = deadline = time.monotonic()
    end = start + total
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    with tempfile.TemporaryDirectory(prefix='gpu_check-') as workdir, open(log_path, 'w') as log:
        try:
            for index, state in enumerate(states):
                # time a section leaves goes to the next; the last one gets all that is left
                deadline = end if index == len(states) - 1 else min(deadline + state.budget, end)
                if deadline - time.monotonic() < 1:
                    state.status = 'skipped: no time left'
                    continue
                run_section(args, state, deadline, workdir, log, report)
                report.write()
                print(f'[gpu_check] {state.name}: {state.status} ({state.seconds:.0f} s, CPU '
                      f'{state.cpu_seconds:.0f} s)', flush=True)
            report.header += f'\n\nFinished in {time.monotonic() - start:.0f} s.'
        except Interrupted as error:
            report.header += (f'\n\n**Interrupted** ({error}) after '
                              f'{time.monotonic() - start:.0f} s.')
        report.write()
        # The fragments live in workdir: keep their text in the report before it goes.
        final = report.render()
    with open(out, 'w') as f:
        f.write(final)
    print(f'[gpu_check] report: {out}; log: {log_path}')
    return 0 if all(s.status == 'passed' for s in states) else 1


def source_commit() -> str:
    """The commit of the code under test (``benchmarks/_source.py``)."""
    return benchmark_module('_source').source_commit()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, 1 iteration, a few configs (what CI runs on the CPU)')
    parser.add_argument('--out', default=osp.join(REPO, 'work_dirs', 'gpu_check',
                                                  'gpu_check.md'), help='the markdown report')
    parser.add_argument('--log', help='all sections\' output (default: the report\'s name, .log)')
    parser.add_argument('--budget', type=float,
                        help='total seconds: each section gets its floor and a share of the rest '
                             '(default: the sections\' own budgets, 425 s; --quick ~900 s)')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, help='default: all')
    parser.add_argument('--configs', nargs='+', help='configs for the train section (default: '
                        'every distillation config; --quick: three)')
    parser.add_argument('--iters', type=int, help='training iterations per precision')
    parser.add_argument('--workers', type=int, help='processes sharing the train section '
                        '(default: 4 on CUDA, 1 on the CPU, 2 with --quick)')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads per process (default: all cores on CUDA, 2 on '
                             'the CPU, 1 with --quick)')
    parser.add_argument('--mmrazor-dir',
                        default=osp.expanduser('~/.cache/mmkd/benchmarks/mmrazor-1.0.0'),
                        help='a folder with MMRazor 1.0.0 installed (pip --target); never '
                             'installed by this script')
    # One section in this process (the parent starts these).
    parser.add_argument('--section', choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument('--fragment', help=argparse.SUPPRESS)
    parser.add_argument('--shard', default='0/1', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shard_index, args.shards = map(int, args.shard.split('/'))
    if args.workers is None:
        args.workers = QUICK.workers if args.quick else FULL.workers if args.device == 'cuda' else 1
    if args.threads is None:  # tiny models: one thread each is faster than two that contend
        args.threads = (os.cpu_count() or 2) if args.device == 'cuda' else 1 if args.quick else 2
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.section:
        return run_section_here(args, plan)
    return run_all(args, plan)


if __name__ == '__main__':
    sys.exit(main())
