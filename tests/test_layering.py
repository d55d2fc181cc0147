"""mmkd's layers: no module imports from a layer above its own.

Lowest first (README, "Layout"):

    utils < registry < models < datasets, datafree, engine < apis < demo < mmkd (the root)

``mmkd/utils`` and ``mmkd/version.py`` are the bottom; ``mmkd/__init__.py`` is the package's
public face, above everything, so no module inside mmkd imports the bare ``mmkd`` package
(import the submodule it needs). Modules of one layer may import each other. The one exception
is :func:`mmkd.utils.register_all_modules`, whose body imports the packages that register into
mmkd's registries (as mmpretrain's and mmdet's ``register_all_modules`` do).

Every import statement counts, also one inside a function: a deferred import is still a
dependency.
"""
import ast
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Package prefix -> layer (higher may import lower). The longest matching prefix wins.
LAYERS = {
    'mmkd.version': 0,
    'mmkd.utils': 0,
    'mmkd.registry': 1,
    'mmkd.models': 2,
    'mmkd.datasets': 3,
    'mmkd.datafree': 3,
    'mmkd.engine': 3,
    'mmkd.apis': 4,
    'mmkd.demo': 5,
    'mmkd': 6,
}
#: (module, function) whose imports may go up: registration of every mmkd module.
ALLOWED_UPWARD = {('mmkd.utils.setup_env', 'register_all_modules')}


def layer_of(module: str) -> Optional[int]:
    """The layer of an ``mmkd`` module name, ``None`` for other packages.

    Examples:
        >>> layer_of('mmkd.models.recorders.base_recorder'), layer_of('mmkd'), layer_of('torch')
        (2, 6, None)
    """
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + '.')]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: str, package_dir: str) -> str:
    """``mmkd/models/builder.py`` -> ``mmkd.models.builder``; a package's ``__init__.py`` is the
    package."""
    relative = osp.relpath(path, osp.dirname(package_dir))[:-len('.py')].split(os.sep)
    return '.'.join(relative[:-1] if relative[-1] == '__init__' else relative)


def imported_modules(node: ast.AST, module: str, is_package: bool,
                     package_dir: str) -> List[str]:
    """The modules an ``import``/``from ... import`` statement of ``module`` loads (relative
    imports resolved; ``from mmkd import utils`` is ``mmkd.utils`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ''
    if node.level:
        parts = module.split('.')
        parts = parts if is_package else parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = '.'.join(parts + ([base] if base else []))
    root = osp.dirname(package_dir)
    submodules = [f'{base}.{alias.name}' for alias in node.names
                  if osp.exists(osp.join(root, *f'{base}.{alias.name}'.split('.')) + '.py')
                  or osp.isdir(osp.join(root, *f'{base}.{alias.name}'.split('.')))]
    return submodules or [base]


def imports_with_function(tree: ast.Module) -> Iterator[Tuple[ast.AST, Optional[str]]]:
    """Every import statement of ``tree`` with the name of the outermost function around it."""
    def visit(node: ast.AST, function: Optional[str]):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, function
            inner = function
            if function is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name
            yield from visit(child, inner)
    yield from visit(tree, None)


def upward_imports(package_dir: str) -> List[str]:
    """``file:line: <module> (layer i) imports <module> (layer j > i)`` for each upward import of
    the package at ``package_dir``."""
    found = []
    for folder, _, files in os.walk(package_dir):
        for name in sorted(files):
            if not name.endswith('.py'):
                continue
            path = osp.join(folder, name)
            module = module_name(path, package_dir)
            own = layer_of(module)
            with open(path, encoding='utf-8') as file:
                tree = ast.parse(file.read(), filename=path)
            for node, function in imports_with_function(tree):
                if (module, function) in ALLOWED_UPWARD:
                    continue
                for target in imported_modules(node, module, name == '__init__.py',
                                               package_dir):
                    other = layer_of(target)
                    if other is not None and other > own:
                        found.append(f'{osp.relpath(path, osp.dirname(package_dir))}:'
                                     f'{node.lineno}: {module} (layer {own}) imports {target} '
                                     f'(layer {other})')
    return sorted(found)


def test_no_module_imports_from_a_higher_layer():
    found = upward_imports(osp.join(REPO, 'mmkd'))
    assert not found, ('imports from a higher layer (see tests/test_layering.py and the '
                       "README's Layout section; move the code down a layer):\n"
                       + '\n'.join(found))


def test_the_check_sees_relative_deferred_and_root_imports(tmp_path):
    package = tmp_path / 'mmkd'
    for folder in ('utils', 'models/recorders', 'apis'):
        (package / folder).mkdir(parents=True)
        (package / folder / '__init__.py').write_text('')
    (package / '__init__.py').write_text('from .utils import helper\n')
    (package / 'utils' / 'helper.py').write_text(
        'def read():\n    from mmkd.apis import train\n    import mmkd\n')
    (package / 'utils' / 'setup_env.py').write_text(
        'def register_all_modules():\n    import mmkd.models\n')
    (package / 'models' / 'recorders' / 'base.py').write_text(
        'from ... import apis\nfrom ...utils import helper\nfrom . import base\n')
    (package / 'apis' / 'train.py').write_text('from mmkd.models.recorders import base\n')
    assert upward_imports(str(package)) == [
        'mmkd/models/recorders/base.py:1: mmkd.models.recorders.base (layer 2) imports '
        'mmkd.apis (layer 4)',
        'mmkd/utils/helper.py:2: mmkd.utils.helper (layer 0) imports mmkd.apis.train (layer 4)',
        'mmkd/utils/helper.py:3: mmkd.utils.helper (layer 0) imports mmkd (layer 6)',
    ]


def test_models_package_exports_what_its_subpackages_export():
    """``from mmkd.models import *`` gives every public name of the seven subpackages it
    star-imports, not only the builder."""
    import mmkd.models
    namespace = {}
    exec('from mmkd.models import *', namespace)  # noqa: S102 (the statement under test)
    subpackages = ('algorithms', 'backbones', 'connectors', 'distillers', 'heads', 'losses',
                   'recorders')
    expected = {'build_model_from_cfg'}.union(
        *(getattr(mmkd.models, name).__all__ for name in subpackages))
    assert expected <= set(namespace), sorted(expected - set(namespace))
