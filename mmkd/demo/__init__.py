"""The digits demo (``tools/digits_demo.py``) and its benchmarks: example code built on mmkd's
API, not part of it. :mod:`~mmkd.demo.digits` trains and compares the runs,
:mod:`~mmkd.demo.report` writes their table and plot, :mod:`~mmkd.demo.progress` is what the
terminal shows while they train."""
