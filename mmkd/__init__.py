"""mmkd: knowledge distillation for the OpenMMLab 2.x ecosystem."""
from .utils.compat import apply_compat_shims
from .version import __version__

# Before anything imports mmpretrain.models: mmpretrain 1.2.0 next to transformers >= 5.
apply_compat_shims()

__all__ = ['__version__']
