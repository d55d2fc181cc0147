import os
import sys

import pytest
import torch

# The tests live in folders that mirror the package (tests/test_models/..., tests/test_engine/,
# ...); their shared helpers (helpers.py, data_factory.py) sit here, importable from any of them.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get('MMKD_TEST_THREADS', '2')))


@pytest.fixture(scope='session', autouse=True)
def mmkd_registered():
    from mmkd.utils import register_all_modules
    register_all_modules(init_default_scope=False)


@pytest.fixture(autouse=True)
def mmkd_default_scope():
    """Every test starts in mmkd's default scope, as the tools set it, whatever scope the
    previous test's runners left behind (mmengine keeps the latest one process-wide)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmkd'):
        yield
