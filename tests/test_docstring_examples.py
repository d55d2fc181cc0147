"""The ``Examples:`` blocks of the registries, the config reader and the recorders run as
written (doctest) and print what they show."""
import doctest
import importlib

import pytest

MODULES = [
    'mmkd.registry',
    'mmkd.utils.config',
    'mmkd.models.recorders.base_recorder',
    'mmkd.models.recorders.method_recorders',
    'mmkd.models.recorders.module_recorders',
    'mmkd.models.recorders.pre_relu_recorder',
    'mmkd.models.recorders.recorder_manager',
]


@pytest.mark.parametrize('name', MODULES)
def test_examples_run_as_written(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f'{name} has no examples'
    assert result.failed == 0, f'{result.failed} of the examples of {name} failed (see above)'
