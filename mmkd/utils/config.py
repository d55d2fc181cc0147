"""Reading configs: stock configs of mmpretrain/mmdet/mmseg (``'mmdet::retinanet/...py'``) and
mmkd's own (``'mmkd::digits/...py'``), config files with user errors that name the file, the line
and the fix, and the dict operations on model configs (merging overrides, stripping pretrained
initialisation).

Model building (a student or teacher from its config) lives in :mod:`mmkd.models.builder`;
this module builds nothing.

Examples:
    >>> merge_dicts(dict(backbone=dict(depth=18, out_indices=(3, ))),
    ...             dict(backbone=dict(depth=34)))
    {'backbone': {'depth': 34, 'out_indices': (3,)}}
    >>> merge_dicts(dict(neck=dict(type='FPN', in_channels=[1, 2])),
    ...             dict(neck=dict(_delete_=True, type='GAP')))
    {'neck': {'type': 'GAP'}}
    >>> strip_pretrained_init(dict(init_cfg=dict(type='Pretrained', checkpoint='x.pth'),
    ...                            backbone=dict(pretrained='y.pth', depth=18)))
    {'backbone': {'pretrained': None, 'depth': 18}}
"""
import ast
import contextlib
import copy
import importlib.util
import os
import os.path as osp
from typing import Any, Iterator, List, Optional, Tuple, Union

from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config

from .errors import ConfigError, ConfigKeyError, NameNotFoundError, UserFileNotFoundError
from .misc import did_you_mean

#: The OpenMMLab packages whose configs (``'<package>::path.py'``) and models mmkd reads; a
#: package's scope name is its import name.
CONFIG_PACKAGES = ('mmpretrain', 'mmdet', 'mmseg', 'mmkd', 'mmcls')


def config_to_dict(cfg: Any) -> Any:
    """A plain-dict deep copy of a :class:`Config`/:class:`ConfigDict`; other values deep-copied."""
    if isinstance(cfg, (Config, ConfigDict)):
        return cfg.to_dict()
    return copy.deepcopy(cfg)


def merge_dicts(base: dict, overrides: dict) -> dict:
    """Recursively merge ``overrides`` into a copy of ``base`` (``_delete_=True`` replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) \
                and not value.get('_delete_', False):
            merged[key] = merge_dicts(merged[key], value)
        else:
            value = copy.deepcopy(value)
            if isinstance(value, dict):
                value.pop('_delete_', None)
            merged[key] = value
    return merged


def strip_pretrained_init(cfg: Any) -> Any:
    """Remove ``init_cfg=dict(type='Pretrained', ...)`` and ``pretrained=...`` entries, so that
    building and ``init_weights`` never download weights."""
    if isinstance(cfg, list):
        return [strip_pretrained_init(item) for item in cfg]
    if not isinstance(cfg, dict):
        return cfg
    result = {}
    for key, value in cfg.items():
        if key == 'pretrained' and isinstance(value, str):
            result[key] = None
        elif key == 'init_cfg' and _is_pretrained_init(value):
            continue
        elif key == 'init_cfg' and isinstance(value, list):
            result[key] = [v for v in value if not _is_pretrained_init(v)]
        else:
            result[key] = strip_pretrained_init(value)
    return result


def _is_pretrained_init(init_cfg: Any) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def _mmkd_config_dirs() -> List[str]:
    """The folders mmkd's own configs are read from: the installed package's ``.mim/configs``,
    then the repository's ``configs`` (editable installs, where mmengine's
    ``get_installed_path`` points to a directory that does not exist)."""
    package_dir = osp.dirname(osp.dirname(osp.abspath(__file__)))  # mmkd/
    return [osp.join(package_dir, '.mim', 'configs'),
            osp.join(osp.dirname(package_dir), 'configs')]


def package_config_dirs(package: str) -> List[str]:
    """The folders holding the configs that ``package`` ships (``'mmdet'``)."""
    if package == 'mmkd':
        return _mmkd_config_dirs()
    from mmengine.utils import get_installed_path
    return [osp.join(get_installed_path(package), '.mim', 'configs')]


def _config_files(root: str) -> List[str]:
    """Paths of the ``.py`` files under ``root``, relative to it."""
    found = []
    for folder, _, files in os.walk(root):
        found += [osp.relpath(osp.join(folder, name), root) for name in files
                  if name.endswith('.py')]
    return sorted(found)


def _close_configs(relative_path: str, roots: List[str]) -> str:
    """A sentence proposing configs under ``roots`` whose path looks like ``relative_path``
    (those of the same folder first), or an empty string."""
    candidates = [path for root in roots if osp.isdir(root) for path in _config_files(root)]
    folder = osp.dirname(relative_path)
    same_folder = [c for c in candidates if osp.dirname(c) == folder]
    return did_you_mean(relative_path, same_folder) or did_you_mean(relative_path, candidates)


def mmkd_config_path(relative_path: str) -> str:
    """Absolute path of one of mmkd's configs (``'digits/kd_resnet18.py'``).

    Raises:
        UserFileNotFoundError: mmkd has no such config (names the folders searched and close
            names).
    """
    return _package_config_path('mmkd', relative_path)


def _package_config_path(package: str, relative_path: str) -> str:
    roots = package_config_dirs(package)
    for root in roots:
        path = osp.join(root, relative_path)
        if osp.isfile(path):
            return path
    searched = ' and '.join(root for root in roots if osp.isdir(root)) or ' and '.join(roots)
    raise UserFileNotFoundError(
        f'{package}::{relative_path}: {package} has no config {relative_path!r} (searched '
        f'{searched}).{_close_configs(relative_path, roots)}')


def _check_package(package: str, cfg_path: str) -> None:
    """Refuse a ``package::`` prefix that names no installed package (mmengine would try to
    ``pip install`` it)."""
    if not package.isidentifier() or importlib.util.find_spec(package) is None:
        installed = [name for name in CONFIG_PACKAGES if importlib.util.find_spec(name)]
        raise NameNotFoundError(
            f'{cfg_path}: {package!r} is not an installed package that ships configs; use one '
            f'of {installed}.{did_you_mean(package, installed)}')


@contextlib.contextmanager
def _config_file_errors(cfg_path: str) -> Iterator[None]:
    """Report a syntax error (file and line) or a missing ``_base_`` file of a config as a
    user error."""
    try:
        yield
    except SyntaxError as error:
        # mmengine parses files without telling ast their names: find the file again
        located = _locate_syntax_error(cfg_path, set()) or error
        line = f', line {located.lineno}' if located.lineno else ''
        text = f'\n    {located.text.strip()}' if located.text else ''
        raise ConfigError(f'config {located.filename or cfg_path}{line}: {located.msg}{text}\n'
                          'Fix the Python syntax of that file.') from error
    except FileNotFoundError as error:
        if isinstance(error, UserFileNotFoundError):
            raise
        raise UserFileNotFoundError(f'config {cfg_path}: {error} (a file its _base_ names?)'
                                    ) from error


def _locate_syntax_error(path: str, seen: set) -> Optional[SyntaxError]:
    """The syntax error (with file name and line) of the config ``path`` or of a file its
    ``_base_`` chain names, or ``None``."""
    if path in seen or not osp.isfile(path):
        return None
    seen.add(path)
    try:
        with open(path, encoding='utf-8') as file:
            tree = ast.parse(file.read(), filename=path)
    except SyntaxError as error:
        return error
    for base in _base_paths(tree, path):
        error = _locate_syntax_error(base, seen)
        if error is not None:
            return error
    return None


def _base_paths(tree: ast.Module, path: str) -> List[str]:
    """The files named by the ``_base_`` assignment of a parsed config."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == '_base_' for target in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return []
            bases = [bases] if isinstance(bases, str) else list(bases)
            return [_base_path(base, path) for base in bases if isinstance(base, str)]
    return []


def _base_path(base: str, path: str) -> str:
    if '::' not in base:
        return osp.join(osp.dirname(path), base)
    package, relative_path = base.split('::', 1)
    if not package.isidentifier() or importlib.util.find_spec(package) is None:
        return base  # not a file: mmengine reports the package
    roots = package_config_dirs(package)
    return next((osp.join(root, relative_path) for root in roots
                 if osp.isfile(osp.join(root, relative_path))), base)


def _read_config_file(path: str) -> Config:
    """``Config.fromfile`` with user errors for a missing file and a syntax error."""
    if not osp.isfile(path):
        folder = osp.dirname(osp.abspath(path))
        hint = (did_you_mean(osp.basename(path),
                             [f for f in os.listdir(folder) if f.endswith('.py')])
                if osp.isdir(folder) else f' (the folder {folder} does not exist either)')
        raise UserFileNotFoundError(f'config file {path} does not exist.{hint}')
    with _config_file_errors(path):
        return Config.fromfile(path)


def read_config(cfg_path: str) -> Tuple[Config, Optional[str]]:
    """Read ``'package::relative/path.py'`` or a file path.

    Returns:
        tuple: (config, package name or ``None``).

    Raises:
        UserFileNotFoundError: The file does not exist (for ``package::``: which folder was
            searched, and close names).
        NameNotFoundError: ``package`` is not an installed package that ships configs.
        ConfigError: The config has a syntax error (the message gives the file and line).
    """
    if '::' not in cfg_path:
        return _read_config_file(cfg_path), None
    package, relative_path = cfg_path.split('::', 1)
    _check_package(package, cfg_path)
    path = _package_config_path(package, relative_path)
    if package == 'mmkd':
        return _read_config_file(path), package
    with _config_file_errors(path):
        return get_config(cfg_path, pretrained=False), package


def load_stock_model_cfg(cfg_path: str, pretrained: Union[bool, str] = False,
                         overrides: Optional[dict] = None) -> Tuple[dict, str, Optional[str]]:
    """The ``model`` config of a stock config, ready to build.

    Args:
        cfg_path: ``'package::relative/path.py'``, or a path to a config file.
        pretrained: ``False`` strips pretrained initialisation; ``True`` keeps it and returns
            the model zoo URL of the config's weights; a path returns that checkpoint.
        overrides: Merged into the model config.

    Returns:
        tuple: (model config, scope to build it in, checkpoint to load or ``None``).
    """
    cfg, package = read_config(cfg_path)
    scope = cfg.get('default_scope') or package or 'mmkd'
    if 'model' not in cfg:
        raise ConfigKeyError(f'{cfg_path} has no `model` entry, so it cannot give the student '
                             'or the teacher; name a config that defines `model`.')
    model_cfg = config_to_dict(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', config_to_dict(cfg.data_preprocessor))
    checkpoint = None
    if pretrained is True:
        checkpoint = _model_zoo_url(cfg_path)
    elif isinstance(pretrained, str):
        checkpoint = pretrained
    if pretrained is False or checkpoint is not None:
        model_cfg = strip_pretrained_init(model_cfg)
    if overrides:
        model_cfg = merge_dicts(model_cfg, config_to_dict(overrides))
    return model_cfg, scope, checkpoint


def _model_zoo_url(cfg_path: str) -> str:
    cfg = get_config(cfg_path, pretrained=True) if '::' in cfg_path else Config.fromfile(cfg_path)
    if 'model_path' not in cfg:
        raise ConfigError(f'pretrained=True, but no weights are known for {cfg_path} (it has no '
                          'metafile entry); give pretrained=<checkpoint path> instead.')
    return cfg.model_path
