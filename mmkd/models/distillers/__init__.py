from .configurable_distiller import ConfigurableDistiller, DataSpec
from .tap_pairs import expand_tap_pairs

__all__ = ['ConfigurableDistiller', 'DataSpec', 'expand_tap_pairs']
