"""Train and compare digits distillation runs: the code behind ``tools/digits_demo.py`` (the
README's first command) and ``benchmarks/accuracy_digits.py``. Demo code, not mmkd's API.

Every run goes through :func:`mmkd.apis.train.build_train_runner`, the code path of
``tools/train.py``. The teacher is a checkpoint given by the user (evaluated with
:func:`mmkd.apis.test.build_test_runner`), or trained once into a cache directory and reused
while its config and checkpoint are unchanged (see :func:`find_cached_teacher`). The chosen
students (:data:`DIGITS_ENTRIES`) and the students without a teacher they are compared with
(:func:`resolve_entries`) are trained for every seed. The reported top-1 of a run is the
validation accuracy after its *last* epoch (never the best epoch: that would select on the
validation set). The table and plot of the comparison are written by :mod:`mmkd.demo.report`;
what the terminal shows while the runs train, by :mod:`mmkd.demo.progress`.
"""
import hashlib
import json
import math
import os
import os.path as osp
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.runner import Runner, find_latest_checkpoint

from mmkd.apis.test import build_test_runner
from mmkd.apis.train import build_train_runner
from mmkd.utils.config import mmkd_config_path
from mmkd.utils.errors import ConfigError, NameNotFoundError
from .progress import TrainingProgress

METRIC = 'accuracy/top1'
TEACHER = 'teacher'
TEACHER_CONFIG = 'digits/teacher_resnet18_w32.py'
#: Written next to the teacher's checkpoint once it is trained; what the cache is checked by.
TEACHER_RECORD = 'mmkd_teacher_cache.json'


class DigitsEntry(NamedTuple):
    """One student row of the comparison.

    Attributes:
        config: Config path relative to mmkd's ``configs/``.
        baseline: The entry this one is compared with; ``None`` for a baseline (a student
            trained alone).
        in_demo: Whether ``tools/digits_demo.py`` runs it by default (slow methods: ``False``;
            the benchmark runs every entry).
    """
    config: str
    baseline: Optional[str] = 'baseline'
    in_demo: bool = True


#: The methods on digits, name -> entry. A method's digits config is added with one line.
DIGITS_ENTRIES: Dict[str, DigitsEntry] = {
    'baseline': DigitsEntry('digits/student_resnet18_w4.py', baseline=None),
    'kd': DigitsEntry('digits/kd_resnet18_w32_w4.py'),
    'fitnets': DigitsEntry('digits/fitnets_resnet18_w32_w4.py'),
    'ofd': DigitsEntry('digits/ofd_resnet18_w32_w4.py'),
    'fsp_one_stage': DigitsEntry('digits/fsp_one_stage_resnet18_w32_w4.py', in_demo=False),
    'fsp_two_stage': DigitsEntry('digits/fsp_two_stage_resnet18_w32_w4.py', in_demo=False),
    'tekap_logit': DigitsEntry('digits/tekap_logit_resnet18_w32_w4.py', in_demo=False),
    'tekap_feature': DigitsEntry('digits/tekap_feature_resnet18_w32_w4.py', in_demo=False),
    'tekap_logit_feature': DigitsEntry('digits/tekap_logit_feature_resnet18_w32_w4.py',
                                       in_demo=False),
    # DearKD's student is a ViT: compared with the same ViT trained alone (150 epochs)
    'vit_alone': DigitsEntry('digits/dearkd_mhca_vit_alone.py', baseline=None, in_demo=False),
    'vit_kd': DigitsEntry('digits/dearkd_mhca_vit_kd.py', baseline='vit_alone', in_demo=False),
    'dearkd': DigitsEntry('digits/dearkd_resnet18_w32_mhca_vit.py', baseline='vit_alone',
                          in_demo=False),
}


@dataclass
class RunResult:
    """What one training run gave.

    Attributes:
        name: Entry name (``'teacher'``, ``'baseline'``, ``'kd'``...).
        config: Config path relative to mmkd's ``configs/``.
        seed: ``randomness.seed`` (and the few-shot ``shots_seed``) of the run.
        top1: Validation top-1 (%) after the last epoch.
        curve: (epoch, validation top-1) at every validation.
        checkpoint: The last checkpoint the run wrote.
        work_dir: The run's work dir.
        wall_s: Seconds the run took (0 when reused from the cache).
        reused: Whether it is a cached or given teacher rather than a run of this call.
    """
    name: str
    config: str
    seed: int
    top1: float
    curve: List[Tuple[int, float]]
    checkpoint: str
    work_dir: str
    wall_s: float = 0.0
    reused: bool = False


@dataclass
class Comparison:
    """The teacher and every student run of one comparison."""
    teacher: RunResult
    runs: List[RunResult] = field(default_factory=list)
    seeds: Tuple[int, ...] = (0, )
    epochs: Optional[int] = None
    wall_s: float = 0.0

    def runs_of(self, name: str) -> List[RunResult]:
        return [run for run in self.runs if run.name == name]


# -- configs --------------------------------------------------------------------------------
def is_distillation_config(cfg: Config) -> bool:
    """Whether the config trains a student from a teacher."""
    return 'teacher' in cfg.model


def shorten_schedule(cfg: Config, epochs: int) -> None:
    """Train for ``epochs`` epochs: sets ``max_epochs``, fits epoch-based schedulers (``T_max``,
    ``end``) into the new length and saves a checkpoint at the end."""
    if epochs < 1:
        raise ConfigError(f'epochs must be >= 1, got {epochs} (--epochs).')
    cfg.train_cfg.max_epochs = epochs
    schedulers = cfg.get('param_scheduler') or []
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if not scheduler.get('by_epoch', True):
            raise ConfigError(f'cannot shorten the iteration-based scheduler {scheduler} to '
                              f'{epochs} epochs; drop --epochs or make it by_epoch.')
        begin = scheduler.get('begin', 0)
        if 'T_max' in scheduler:
            scheduler.T_max = max(epochs - begin, 1)
        if scheduler.get('end', math.inf) > epochs:
            scheduler.end = epochs
    cfg.default_hooks.checkpoint.interval = epochs


def digits_config(config: str, seed: Optional[int] = None, epochs: Optional[int] = None,
                  val_interval: Optional[int] = None,
                  teacher_ckpt: Optional[str] = None,
                  shots_per_class: Optional[int] = None) -> Config:
    """Load a digits config and apply the comparison's settings.

    Args:
        config: Path relative to mmkd's ``configs/``.
        seed: Sets ``randomness.seed`` and, for a few-shot training set, its ``shots_seed``;
            ``None`` keeps the config's.
        epochs: Shortened schedule (see :func:`shorten_schedule`); ``None`` keeps it.
        val_interval: Validate every ``val_interval`` epochs (and after the last one).
        teacher_ckpt: Teacher checkpoint of a distillation config.
        shots_per_class: Training images per class of a few-shot config (0: the whole training
            split); ``None`` keeps the config's.
    """
    cfg = Config.fromfile(mmkd_config_path(config))
    if shots_per_class is not None:
        set_shots_per_class(cfg, config, shots_per_class)
    if seed is not None:
        cfg.randomness.seed = seed
        dataset = cfg.train_dataloader.dataset
        if dataset.get('shots_per_class') is not None:
            dataset.shots_seed = seed
    if epochs is not None:
        shorten_schedule(cfg, epochs)
    if val_interval is not None:
        if val_interval < 1:
            raise ConfigError(f'val_interval must be >= 1, got {val_interval} '
                              '(--val-interval).')
        cfg.train_cfg.val_interval = val_interval
    if is_distillation_config(cfg):
        if teacher_ckpt is None:
            raise ConfigError(f'{config} distils from a teacher: give teacher_ckpt.')
        cfg.model.teacher_ckpt = teacher_ckpt
    return cfg


def set_shots_per_class(cfg: Config, config: str, shots_per_class: int) -> None:
    """Train on ``shots_per_class`` images per class (0: all of them)."""
    if shots_per_class < 0:
        raise ConfigError(f'shots_per_class must be >= 0, got {shots_per_class}.')
    dataset = cfg.train_dataloader.dataset
    if 'shots_per_class' not in dataset:
        raise ConfigError(f'{config} does not train on a few-shot subset of digits (its '
                          f'dataset is {dataset.get("type")}); drop shots_per_class for it.')
    dataset.shots_per_class = shots_per_class or None


# -- one run ----------------------------------------------------------------------------------
def read_val_curve(log_dir: str, metric: str = METRIC) -> List[Tuple[int, float]]:
    """(epoch, value) of ``metric`` at every validation, from the run's ``scalars.json``."""
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'no scalars at {path}: the run logged no validation.')
    curve = []
    with open(path) as file:
        for line in file:
            record = json.loads(line)
            if metric in record:
                curve.append((int(record['step']), float(record[metric])))
    return curve


def say(progress: Optional[TrainingProgress], text: str) -> None:
    """Print one line of the comparison's story: through ``progress``, or as ``[digits] text``
    without it."""
    if progress is None:
        print(f'[digits] {text}', flush=True)
    else:
        progress.message(text)


def train_run(name: str, config: str, cfg: Config, work_dir: str,
              progress: Optional[TrainingProgress] = None,
              label: Optional[str] = None) -> RunResult:
    """Train ``cfg`` through ``tools/train.py``'s code path and collect its result.

    Args:
        name: Entry name, shown on the progress bar and in the experiment name.
        config: Config path relative to mmkd's ``configs/`` (recorded in the result).
        cfg: The config to train.
        work_dir: The run's work dir.
        progress: Shows the run as a progress bar and keeps mmengine's logs in the run's log
            file (see :class:`~mmkd.demo.progress.TrainingProgress`); ``None``: mmengine logs
            to the terminal as ``tools/train.py`` does.
        label: The progress bar's name of the run; default ``name``.
    """
    seed = int(cfg.randomness.seed)
    work_dir = osp.abspath(work_dir)
    # A name unique to this run: mmengine shares loggers and visualizers by experiment name.
    digest = hashlib.sha1(work_dir.encode()).hexdigest()[:8]
    cfg.experiment_name = f'{name}_seed{seed}_{digest}'
    start = time.perf_counter()
    if progress is None:
        runner = build_train_runner(cfg, work_dir=work_dir)
        runner.train()
    else:
        with progress.track(label or name) as track:
            runner = track.build(lambda: build_train_runner(cfg, work_dir=work_dir))
            runner.train()
    wall = time.perf_counter() - start
    curve = read_val_curve(runner.log_dir)
    max_epochs = cfg.train_cfg.max_epochs
    if not curve or curve[-1][0] != max_epochs:
        raise RuntimeError(f'{name}: no validation after the last epoch ({max_epochs}) in '
                           f'{runner.log_dir}; the comparison needs it.')
    checkpoint = find_latest_checkpoint(work_dir)
    if checkpoint is None:
        raise RuntimeError(f'{name}: the run wrote no checkpoint in {work_dir}.')
    return RunResult(name, config, seed, curve[-1][1], curve, checkpoint, work_dir, wall)


# -- the teacher and its cache --------------------------------------------------------------
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for chunk in iter(lambda: file.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def config_fingerprint(cfg: Config) -> str:
    """Hash of the config as it will be trained (file contents and overrides)."""
    return hashlib.sha256(cfg.pretty_text.encode()).hexdigest()


def find_cached_teacher(teacher_dir: str, fingerprint: str) -> Tuple[Optional[RunResult], str]:
    """The teacher cached in ``teacher_dir``, if it can be reused.

    The cache is valid when the record written after training exists, was written for the same
    teacher config (``fingerprint``: same file contents and overrides, e.g. epochs) and the
    checkpoint it names still has the SHA-256 recorded then (not replaced, truncated or
    retrained by hand). Anything else means the teacher is trained again.

    Returns:
        tuple: (the cached teacher or ``None``, why it cannot be reused or ``''``).
    """
    path = osp.join(teacher_dir, TEACHER_RECORD)
    if not osp.isfile(path):
        return None, f'no cache record {path}'
    with open(path) as file:
        record = json.load(file)
    checkpoint = osp.join(teacher_dir, record.get('checkpoint', ''))
    if record.get('fingerprint') != fingerprint:
        return None, 'the teacher config or its overrides changed'
    if not osp.isfile(checkpoint) or file_sha256(checkpoint) != record.get('sha256'):
        return None, f'{checkpoint} is missing or changed since it was trained'
    result = RunResult(**record['result'])
    result.checkpoint, result.work_dir, result.wall_s, result.reused = \
        checkpoint, teacher_dir, 0.0, True
    result.curve = [tuple(point) for point in result.curve]
    return result, ''


def write_teacher_record(result: RunResult, fingerprint: str) -> None:
    record = dict(fingerprint=fingerprint, checkpoint=osp.basename(result.checkpoint),
                  sha256=file_sha256(result.checkpoint), result=asdict(result))
    path = osp.join(result.work_dir, TEACHER_RECORD)
    with open(path + '.tmp', 'w') as file:
        json.dump(record, file, indent=2)
    os.replace(path + '.tmp', path)


def evaluate_checkpoint(config: str, checkpoint: str, work_dir: str,
                        progress: Optional[TrainingProgress] = None) -> float:
    """Validation top-1 of ``checkpoint`` through ``tools/test.py``'s code path (mmengine's
    logs kept in the log file with ``progress``, see :func:`train_run`)."""

    def build() -> Runner:
        return build_test_runner(Config.fromfile(mmkd_config_path(config)), checkpoint,
                                 work_dir=work_dir)

    if progress is None:
        return float(build().test()[METRIC])
    with progress.track(TEACHER, bar=False) as track:
        return float(track.build(build).test()[METRIC])


def prepare_teacher(teacher_dir: str, epochs: Optional[int] = None, retrain: bool = False,
                    checkpoint: Optional[str] = None,
                    progress: Optional[TrainingProgress] = None) -> RunResult:
    """The digits teacher: a given checkpoint, the cached one, or a new training run.

    Args:
        teacher_dir: Cache and work dir of the teacher.
        epochs: Shortened teacher schedule; ``None`` keeps the config's.
        retrain: Train even if the cache is valid.
        checkpoint: Use this teacher checkpoint as it is (it is evaluated to report its top-1).
        progress: What the terminal shows (see :func:`train_run`).
    """
    if checkpoint is not None:
        top1 = evaluate_checkpoint(TEACHER_CONFIG, checkpoint, osp.join(teacher_dir, 'eval'),
                                   progress)
        say(progress, f'teacher: {checkpoint} (top-1 {top1:.2f})')
        return RunResult(TEACHER, TEACHER_CONFIG, -1, top1, [], osp.abspath(checkpoint),
                         teacher_dir, reused=True)
    cfg = digits_config(TEACHER_CONFIG, epochs=epochs)
    fingerprint = config_fingerprint(cfg)
    cached, reason = (None, '--retrain-teacher') if retrain else \
        find_cached_teacher(teacher_dir, fingerprint)
    if cached is not None:
        say(progress, f'reusing the teacher cached in {teacher_dir} (top-1 {cached.top1:.2f}); '
            '--retrain-teacher trains it again.')
        return cached
    say(progress, f'training the teacher ({TEACHER_CONFIG}) into {teacher_dir} ({reason})')
    result = train_run(TEACHER, TEACHER_CONFIG, cfg, teacher_dir, progress)
    write_teacher_record(result, fingerprint)
    return result


# -- the comparison ---------------------------------------------------------------------------
def resolve_entries(names: Optional[Sequence[str]] = None) -> List[str]:
    """The entries to run: ``names`` (default: those in the demo) plus the baselines they are
    compared with, baselines first.

    Raises:
        NameNotFoundError: A ``KeyError`` for an unknown name (the message lists the known
            ones).
        FileNotFoundError: An entry's config is missing.
    """
    if names is None:
        names = [name for name, entry in DIGITS_ENTRIES.items() if entry.in_demo]
    unknown = [name for name in names if name not in DIGITS_ENTRIES]
    if unknown:
        raise NameNotFoundError(f'unknown digits methods {unknown}; known: '
                                f'{list(DIGITS_ENTRIES)} (tools/digits_demo.py --list).')
    wanted = set(names) | {DIGITS_ENTRIES[name].baseline for name in names} - {None}
    ordered = sorted(wanted, key=lambda name: (DIGITS_ENTRIES[name].baseline is not None,
                                               list(DIGITS_ENTRIES).index(name)))
    for name in ordered:
        mmkd_config_path(DIGITS_ENTRIES[name].config)
    return ordered


def run_comparison(names: Optional[Sequence[str]] = None,
                   seeds: Sequence[int] = (0, ),
                   work_dir: str = 'work_dirs/digits_demo',
                   teacher_dir: str = 'work_dirs/digits_teacher',
                   epochs: Optional[int] = None,
                   teacher_epochs: Optional[int] = None,
                   val_interval: Optional[int] = None,
                   retrain_teacher: bool = False,
                   teacher_ckpt: Optional[str] = None,
                   shots_per_class: Optional[int] = None,
                   progress: Optional[TrainingProgress] = None) -> Comparison:
    """Train (or reuse) the teacher, then every student entry for every seed.

    Args:
        names: Entries of :data:`DIGITS_ENTRIES` (their baselines are added); ``None``: the
            demo's.
        seeds: Student seeds (``randomness.seed`` and the few-shot ``shots_seed``).
        work_dir: Runs go to ``work_dir/<name>/seed<S>``.
        teacher_dir: The teacher's cache.
        epochs: Shortened student schedules; ``None`` keeps the configs'.
        teacher_epochs: Shortened teacher schedule.
        val_interval: Student validation interval (points of the accuracy curves).
        retrain_teacher: Train the teacher even if its cache is valid.
        teacher_ckpt: Use this teacher checkpoint instead of the cache.
        shots_per_class: Student training images per class (0: all); ``None`` keeps the
            configs' (20).
        progress: Progress bars, mmengine's logs in the runs' log files (see
            :func:`train_run`); ``None``: mmengine's logs on the terminal.
    """
    names = resolve_entries(names)
    if not seeds:
        raise ConfigError('give at least one seed (--seeds 0 1 2).')
    start = time.perf_counter()
    teacher = prepare_teacher(teacher_dir, teacher_epochs, retrain_teacher, teacher_ckpt,
                              progress)
    comparison = Comparison(teacher, seeds=tuple(seeds), epochs=epochs)
    total = len(names) * len(seeds)
    for seed in seeds:
        for name in names:
            config = DIGITS_ENTRIES[name].config
            if progress is None:  # the progress bar names the run
                print(f'[digits] run {len(comparison.runs) + 1}/{total}: {name} ({config}), '
                      f'seed {seed}', flush=True)
            cfg = digits_config(config, seed, epochs, val_interval, teacher.checkpoint,
                                shots_per_class)
            label = name if len(seeds) == 1 else f'{name} seed {seed}'
            comparison.runs.append(
                train_run(name, config, cfg, osp.join(work_dir, name, f'seed{seed}'),
                          progress, label))
    comparison.wall_s = time.perf_counter() - start
    return comparison
