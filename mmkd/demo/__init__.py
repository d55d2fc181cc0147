"""The digits demo: example code built on mmkd's API (:mod:`mmkd.apis`), not part of it; run by
``tools/digits_demo.py`` and ``benchmarks/accuracy_digits.py``. :mod:`~mmkd.demo.digits` trains
and compares the runs, :mod:`~mmkd.demo.report` writes their table and plot,
:mod:`~mmkd.demo.progress` is what the terminal shows while they train."""
