"""Every ``Examples:`` block in mmkd runs as written (doctest) and prints what it shows.

The modules are found by reading the package's sources, so a new example is tested without
being listed here.
"""
import doctest
import importlib
import os.path as osp
import pkgutil

import pytest

import mmkd


def modules_with_examples() -> list:
    """Names of the mmkd modules whose source holds a doctest prompt (``>>> ``)."""
    names = []
    for info in pkgutil.walk_packages(mmkd.__path__, prefix='mmkd.'):
        spec = importlib.util.find_spec(info.name)
        if spec.origin and osp.isfile(spec.origin):
            with open(spec.origin, encoding='utf-8') as source:
                if '>>> ' in source.read():
                    names.append(info.name)
    return names


MODULES = modules_with_examples()


def test_the_examples_are_found():
    for name in ('mmkd.registry', 'mmkd.utils.config', 'mmkd.models.recorders.base_recorder',
                 'mmkd.models.distillers.tap_pairs', 'mmkd.models.connectors.base_connector'):
        assert name in MODULES


@pytest.mark.parametrize('name', MODULES)
def test_examples_run_as_written(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f'{name} has no examples'
    assert result.failed == 0, f'{result.failed} of the examples of {name} failed (see above)'
