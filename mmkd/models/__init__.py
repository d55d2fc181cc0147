from . import algorithms, backbones, connectors, distillers, heads, losses, recorders
from .algorithms import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .builder import build_model_from_cfg
from .connectors import *  # noqa: F401,F403
from .distillers import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .recorders import *  # noqa: F401,F403

# What ``from mmkd.models import *`` gives: every subpackage's public names and the builder.
__all__ = ['build_model_from_cfg', *algorithms.__all__, *backbones.__all__, *connectors.__all__,
           *distillers.__all__, *heads.__all__, *losses.__all__, *recorders.__all__]
