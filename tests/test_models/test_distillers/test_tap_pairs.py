"""The ``Examples:`` of expand_tap_pairs run as written."""
import doctest

from mmkd.models.distillers import tap_pairs


def test_expand_tap_pairs_examples_run_as_written():
    results = doctest.testmod(tap_pairs, raise_on_error=False, verbose=False)
    assert results.attempted >= 10 and results.failed == 0
