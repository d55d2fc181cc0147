"""Which commit the code under test comes from, for the benchmarks' and the GPU check's output.

A snapshot copied to another machine (``git archive``, rsync) may sit next to an old ``.git``
or none, so git there can name the wrong commit. The place that makes the snapshot knows the
right one and hands it on, in this order of precedence:

1. the environment variable ``MMKD_COMMIT`` (e.g. ``MMKD_COMMIT=$(git rev-parse --short HEAD)``;
   ``tools/gpu_run.sh`` exports it);
2. a file ``.mmkd-commit`` at the repository root holding it (git-ignored; written into the
   snapshot, e.g. ``git rev-parse --short HEAD > snapshot/.mmkd-commit``);
3. git in the repository: the short commit, and whether ``mmkd/``, ``configs/``,
   ``benchmarks/`` or ``tools/`` differ from it.

Only the standard library: ``tools/gpu_check.py`` imports it before torch.
"""
import os
import os.path as osp
import subprocess

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
COMMIT_ENV = 'MMKD_COMMIT'
COMMIT_FILE = '.mmkd-commit'
CODE_DIRS = ('mmkd', 'configs', 'benchmarks', 'tools')


def _git(*args: str) -> str:
    try:
        done = subprocess.run(['git', '-C', REPO, *args], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ''
    return done.stdout.strip() if done.returncode == 0 else ''


def source_commit() -> str:
    """``'<commit> (MMKD_COMMIT)'``, ``'<commit> (.mmkd-commit)'``, ``'<commit>'`` or
    ``'<commit> with uncommitted changes'`` (git), or ``'unknown commit'``."""
    given = os.environ.get(COMMIT_ENV, '').strip()
    if given:
        return f'{given} ({COMMIT_ENV})'
    try:
        with open(osp.join(REPO, COMMIT_FILE)) as file:
            written = file.read().strip()
    except OSError:
        written = ''
    if written:
        return f'{written} ({COMMIT_FILE})'
    commit = _git('rev-parse', '--short', 'HEAD')
    if not commit:
        return 'unknown commit'
    dirty = _git('status', '--porcelain', '--', *CODE_DIRS)
    return commit + (' with uncommitted changes' if dirty else '')
