"""Build a runner from a config the way ``tools/train.py`` does (the digits demo uses it too)."""
import os.path as osp
from typing import Optional, Union

from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner, find_latest_checkpoint

from mmkd.utils import register_all_modules, trust_checkpoint_dir
from mmkd.utils.checkpoint import set_checkpoint_role
from mmkd.utils.config import read_config
from mmkd.utils.dist import setup_distributed
from mmkd.utils.errors import UserFileNotFoundError

#: ``default_hooks.checkpoint`` types that :func:`use_atomic_checkpoint_hook` replaces.
_STOCK_CHECKPOINT_HOOKS = ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook)


def load_run_config(config: Union[str, Config], work_dir: Optional[str] = None,
                    cfg_options: Optional[dict] = None, launcher: str = 'none') -> Config:
    """Register mmkd's modules and load a config as the tools do: a file or a config shipped in
    a package (``'mmpretrain::resnet/resnet18_8xb32_in1k.py'``, ``'mmkd::digits/...'``),
    ``cfg_options`` merged, ``launcher`` set, ``work_dir`` given or
    ``./work_dirs/<config name>``."""
    register_all_modules(init_default_scope=False)
    cfg = config if isinstance(config, Config) else read_config(config)[0]
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg


def enable_amp(cfg: Config) -> None:
    """Switch the optimizer wrapper to mmengine's ``AmpOptimWrapper``, as mmdet's ``--amp`` does.

    The forward pass (student, teacher up to its taps, connectors) then runs under autocast
    and mmkd's losses reduce in float32. ``optim_wrapper.dtype`` picks the precision:
    ``'float16'`` (the default on CUDA) with dynamic loss scaling, or ``'bfloat16'`` (Ampere
    and newer GPUs; ``tools/train.py --amp-dtype bfloat16``).

    Raises:
        ConfigRuntimeError: No CUDA (or NPU) device: mmengine's AmpOptimWrapper refuses the CPU.
        ConfigError: Another optimizer wrapper type, a dtype other than float16/bfloat16, or
            bfloat16 on a GPU without it.
    """
    import torch
    from mmengine.device import is_cuda_available, is_npu_available

    from mmkd.utils.errors import ConfigError, ConfigRuntimeError
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
        raise ConfigError(f'--amp works with OptimWrapper, but the config uses {optim_wrapper}. '
                          'Fix: drop --amp and set the mixed precision in that wrapper, or use '
                          "optim_wrapper=dict(type='OptimWrapper', ...).")
    dtype = cfg.optim_wrapper.get('dtype')
    if dtype not in (None, 'float16', 'bfloat16'):
        raise ConfigError(f"optim_wrapper.dtype={dtype!r}: --amp trains in 'float16' or "
                          "'bfloat16'. Fix: --amp-dtype float16 or --amp-dtype bfloat16.")
    if not (is_cuda_available() or is_npu_available()):
        raise ConfigRuntimeError(
            "--amp trains with mmengine's AmpOptimWrapper, which needs a CUDA (or NPU) device; "
            'none is available here. Fix: train on a GPU, or drop --amp on the CPU.')
    if dtype == 'bfloat16' and is_cuda_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError(f'--amp-dtype bfloat16: {torch.cuda.get_device_name()} does not '
                          'support bfloat16. Fix: --amp-dtype float16.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def _add_custom_hook(cfg: Config, hook: dict) -> None:
    """Append ``hook`` to ``custom_hooks`` unless a hook of its type is there."""
    hooks = list(cfg.get('custom_hooks') or [])
    names = (hook['type'], hook['type'].split('.', 1)[-1])
    if not any(h.get('type') in names for h in hooks):
        hooks.append(hook)
    cfg.custom_hooks = hooks


def add_safe_checkpoint_hook(cfg: Config) -> None:
    """Make the run's checkpoints loadable with ``weights_only=True`` (see
    :class:`mmkd.engine.SafeCheckpointHook`)."""
    _add_custom_hook(cfg, dict(type='mmkd.SafeCheckpointHook'))


def use_atomic_checkpoint_hook(cfg: Config) -> None:
    """Save checkpoints with :class:`mmkd.engine.AtomicCheckpointHook`: in place of a
    ``default_hooks.checkpoint`` of type ``CheckpointHook`` (its arguments kept), or of
    mmengine's default one when the config has none. A checkpoint hook of another type, or
    ``checkpoint=None`` (no checkpoints), stays as it is."""
    hooks = cfg.get('default_hooks')
    if hooks is None:
        cfg.default_hooks = hooks = dict()
    if 'checkpoint' not in hooks:
        hooks['checkpoint'] = dict(type='mmkd.AtomicCheckpointHook', interval=1)  # mmengine's
    elif isinstance(hooks['checkpoint'], dict) and hooks['checkpoint'].get(
            'type') in _STOCK_CHECKPOINT_HOOKS:
        hooks['checkpoint']['type'] = 'mmkd.AtomicCheckpointHook'


def resolve_checkpoint_to_load(cfg: Config) -> Optional[str]:
    """The checkpoint the run will resume from or load, checked to exist; ``None`` for none.

    With ``resume=True`` and no ``load_from`` (``--resume`` without a path) this is the file
    that ``<work_dir>/last_checkpoint`` names, as mmengine picks it; it is written into
    ``cfg.load_from``. The file's role (``'resume checkpoint'``, ``'load_from checkpoint'``)
    names it in loading errors.

    Raises:
        UserFileNotFoundError: The file does not exist.
    """
    filename = cfg.get('load_from')
    if cfg.get('resume') and filename is None:
        filename = find_latest_checkpoint(cfg.work_dir)
        if filename is not None and not osp.isfile(filename):
            raise UserFileNotFoundError(
                f'cannot resume: {osp.join(cfg.work_dir, "last_checkpoint")} names '
                f'{filename}, which does not exist (removed, or lost by a run killed while '
                'saving before mmkd wrote checkpoints atomically). Fix: resume from an '
                'existing checkpoint with --resume PATH, or delete last_checkpoint to start '
                'over.')
        cfg.load_from = filename
    if filename is None:
        return None
    role = 'resume checkpoint' if cfg.get('resume') else 'load_from checkpoint'
    if '://' not in filename and not osp.isfile(osp.expanduser(filename)):
        raise UserFileNotFoundError(f'{role} {osp.abspath(filename)} does not exist.')
    set_checkpoint_role(filename, role)
    return filename


def add_reliability_hooks(cfg: Config, checkpoint: Optional[str]) -> None:
    """Atomic checkpoints, their random-number states and, when the run resumes or loads
    ``checkpoint``, a strict check of it before training (see
    :class:`mmkd.engine.AtomicCheckpointHook`, :class:`mmkd.engine.RNGStateHook`,
    :class:`mmkd.engine.StrictLoadHook`)."""
    use_atomic_checkpoint_hook(cfg)
    _add_custom_hook(cfg, dict(type='mmkd.RNGStateHook'))
    if checkpoint is not None:
        _add_custom_hook(cfg, dict(type='mmkd.StrictLoadHook', filename=checkpoint,
                                   resume=bool(cfg.get('resume'))))


def build_train_runner(config: Union[str, Config],
                       work_dir: Optional[str] = None,
                       amp: bool = False,
                       auto_scale_lr: bool = False,
                       resume: Optional[str] = None,
                       cfg_options: Optional[dict] = None,
                       launcher: str = 'none') -> Runner:
    """The runner ``tools/train.py`` trains with.

    Besides the config's own hooks the run gets :class:`mmkd.engine.SafeCheckpointHook`
    (checkpoints load with ``weights_only=True``), :class:`mmkd.engine.AtomicCheckpointHook`
    (in place of mmengine's checkpoint hook), :class:`mmkd.engine.RNGStateHook` (exact
    resume) and, when it resumes or loads a checkpoint, :class:`mmkd.engine.StrictLoadHook`
    (the checkpoint must fit the model: ``load_from`` is strict too).

    Args:
        config: Config path or object.
        work_dir: Overrides the config's; default ``./work_dirs/<config name>``.
        amp: Mixed precision training.
        auto_scale_lr: Scale the learning rate with the total batch size.
        resume: ``'auto'`` (latest checkpoint of the work dir) or a checkpoint path.
        cfg_options: Overrides merged into the config.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg = load_run_config(config, work_dir, cfg_options, launcher)
    if amp:
        enable_amp(cfg)
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)` '
                           'in the config.')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume
        trust_checkpoint_dir(resume)
    trust_checkpoint_dir(cfg.work_dir)
    checkpoint = resolve_checkpoint_to_load(cfg)
    add_safe_checkpoint_hook(cfg)
    add_reliability_hooks(cfg, checkpoint)
    setup_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
