"""Compatibility with the packages around mmkd, applied once by ``import mmkd``.

mmpretrain 1.2.0 next to transformers >= 5
------------------------------------------
mmpretrain decides at import whether to load its multimodal models (BLIP, BLIP-2, OFA, LLaVA,
...): ``mmpretrain.utils.dependency.WITH_MULTIMODAL`` is true when the *distributions*
``pycocotools`` and ``transformers>=4.28.0`` are installed (it reads their package metadata;
transformers is not imported to decide). ``mmpretrain.models`` and ``mmpretrain.datasets`` read
that flag when they are imported; with it true they import the multimodal modules and
``mmpretrain.models.utils.huggingface``, which imports transformers eagerly.

Those modules were written for transformers 4. transformers 5 removed names they import
(``transformers.modeling_utils.apply_chunking_to_forward``, ``find_pruneable_heads_and_indices``,
``prune_linear_layer``); BLIP's language model catches the ImportError, sets the base class to
``None`` and fails with ``TypeError: NoneType takes no arguments``, so ``import mmpretrain.models``
fails — every mmpretrain model with it, and mmkd, which builds on them. GPU images commonly ship
transformers 5 (and mmdet pulls in pycocotools).

:func:`apply_compat_shims` therefore sets ``WITH_MULTIMODAL = False`` when the installed
transformers is 5 or newer, before ``mmpretrain.models`` is imported: mmpretrain behaves exactly as
without transformers (it does not import it, and registers placeholders for its multimodal
models). The placeholders' message is replaced by one naming the conflict and its fix
(``pip install "transformers<5"``). mmkd uses none of those models. With transformers 4, or
none, nothing is changed. ``import mmkd`` before ``mmpretrain.models`` is all it takes; the tools
and mmkd's own modules do that.
"""
import importlib.metadata
import re
import sys
from typing import Optional

#: The first transformers major version that mmpretrain 1.2.0's multimodal models fail with.
FIRST_INCOMPATIBLE_TRANSFORMERS = 5


def installed_version(distribution: str) -> Optional[str]:
    """The version of an installed distribution (from its metadata, as mmpretrain reads it), or
    ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def major_version(version: str) -> int:
    """``'5.17.0'`` -> 5, ``'5.0.0rc1'`` -> 5 (0 when the version does not start with digits)."""
    match = re.match(r'\s*(\d+)', version)
    return int(match.group(1)) if match else 0


def _placeholder_registrar(transformers_version: str):
    """A stand-in for ``mmpretrain.utils.dependency.register_multimodal_placeholder`` whose
    placeholders raise an ImportError naming the transformers conflict."""

    def register_multimodal_placeholder(names, registry) -> None:
        for name in names:

            def ask_downgrade(*args, name: str = name, **kwargs):
                raise ImportError(
                    f'{name} is one of mmpretrain 1.2.0\'s multimodal models, which do not work '
                    f'with the installed transformers {transformers_version}; mmkd switched them '
                    'off so that the rest of mmpretrain imports (mmkd/utils/compat.py). To use '
                    'them: pip install "transformers<5"')

            registry.register_module(name=name, module=ask_downgrade)

    return register_multimodal_placeholder


def disable_mmpretrain_multimodal_for_new_transformers() -> bool:
    """Switch mmpretrain's multimodal models off when transformers >= 5 is installed.

    Returns:
        Whether it switched them off. False when transformers is absent or older than 5, and
        when ``mmpretrain.models`` was imported already (too late to change; if that import
        succeeded, nothing needs changing).
    """
    version = installed_version('transformers')
    if version is None or major_version(version) < FIRST_INCOMPATIBLE_TRANSFORMERS:
        return False
    if 'mmpretrain.models' in sys.modules or installed_version('mmpretrain') is None:
        return False
    # Imports mmpretrain's package and its utils, not mmpretrain.models.
    from mmpretrain.utils import dependency
    dependency.WITH_MULTIMODAL = False
    dependency.register_multimodal_placeholder = _placeholder_registrar(version)
    return True


def apply_compat_shims() -> None:
    """Apply every shim of this module (``import mmkd`` calls it once)."""
    disable_mmpretrain_multimodal_for_new_transformers()
