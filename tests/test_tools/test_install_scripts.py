"""tools/build_mmcv.sh decides the mmcv build (CPU or CUDA ops, architectures, extra headers,
wheel cache key) as it should, checked with ``--dry-run`` on a stand-in CUDA toolkit; and no
package-index host is written into the project (pip's configuration decides where packages
come from)."""
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import REPO

SCRIPT = osp.join(REPO, 'tools', 'build_mmcv.sh')
TORCH_VERSION = torch.__version__.split('+')[0]


def fake_toolkit(root) -> str:
    """An nvcc-only CUDA toolkit, as pip's nvidia-cuda-nvcc and runtime wheels assemble one:
    ``bin/nvcc`` and the runtime's headers, none of cuSPARSE/cuBLAS; plus an ``nvidia-smi``
    that finds no GPU. Returns its ``bin`` folder."""
    bin_dir, include = root / 'cuda' / 'bin', root / 'cuda' / 'include'
    bin_dir.mkdir(parents=True)
    include.mkdir()
    (include / 'cuda_runtime.h').write_text('')
    (bin_dir / 'nvcc').write_text('#!/bin/sh\necho "nvcc: stand-in"\n')
    (bin_dir / 'nvidia-smi').write_text('#!/bin/sh\necho "No devices were found"\nexit 6\n')
    for tool in ('nvcc', 'nvidia-smi'):
        (bin_dir / tool).chmod(0o755)
    return str(bin_dir)


def run_build_script(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ('CUDA_HOME', 'CUDA_PATH', 'FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CPATH')}
    base.update(PYTHON=sys.executable, MMKD_CACHE=str(tmp_path / 'cache'),
                CUDA_VISIBLE_DEVICES='')
    base.update(env)
    return subprocess.run(['bash', SCRIPT, *args], env=base, capture_output=True, text=True,
                          timeout=120)


def plan_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return dict(line.split('=', 1) for line in result.stdout.splitlines())


def nvidia_wheel_include_dirs_with(header: str) -> list:
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(d for p in nvidia.__path__ for d in glob.glob(osp.join(p, '*', 'include'))
                  if osp.isfile(osp.join(d, header)))


def test_without_a_gpu_the_plan_is_cpu_ops_keyed_as_such(tmp_path):
    toolkit = fake_toolkit(tmp_path)
    path = f'{toolkit}:{os.environ["PATH"]}'
    for env in (dict(PATH=path), dict(PATH=path, FORCE_CUDA='0')):
        plan = plan_of(run_build_script(tmp_path, '--dry-run', **env))
        assert plan['ops'] == 'cpu'
        assert plan['variant'] == f'torch-{TORCH_VERSION}-cpu'
        assert plan['wheel_dir'] == str(tmp_path / 'cache' / 'wheels' / plan['variant'])
        assert 'torch_cuda_arch_list' not in plan


@pytest.mark.skipif(torch.version.cuda is None, reason='needs a CUDA build of torch '
                    '(requirements/torch.txt installs one; see the CPU-torch test below)')
def test_force_cuda_with_nvcc_plans_cuda_ops_for_an_arch_keyed_wheel(tmp_path):
    toolkit = fake_toolkit(tmp_path)
    path = f'{toolkit}:{os.environ["PATH"]}'
    cu = 'cu' + torch.version.cuda.replace('.', '')

    # No GPU visible and no TORCH_CUDA_ARCH_LIST: every architecture torch was built for.
    plan = plan_of(run_build_script(tmp_path, '--dry-run', PATH=path, FORCE_CUDA='1'))
    archs = [a[3:] for a in torch.cuda.get_arch_list() if a.startswith('sm_')]
    assert plan['ops'] == 'cuda'
    assert plan['nvcc'] == osp.join(toolkit, 'nvcc')
    assert plan['cuda_home'] == osp.dirname(toolkit)
    assert plan['torch_cuda_arch_list'] == ';'.join(f'{a[:-1]}.{a[-1]}' for a in archs)
    assert plan['variant'] == f'torch-{TORCH_VERSION}-{cu}-sm' + '_'.join(archs)
    # The stand-in toolkit lacks cusparse.h: the nvidia wheels' folders that have it.
    assert 'cusparse.h' in plan['missing_headers'].split(',')
    assert plan['cpath_add'].split(':') == nvidia_wheel_include_dirs_with('cusparse.h')

    # An explicit list, in any order, with PTX; MMKD_BUILD_DRY_RUN=1 works as --dry-run.
    plan = plan_of(run_build_script(tmp_path, PATH=path, FORCE_CUDA='1', MMKD_BUILD_DRY_RUN='1',
                                    TORCH_CUDA_ARCH_LIST='9.0+PTX;8.0'))
    assert plan['torch_cuda_arch_list'] == '9.0+PTX;8.0'
    assert plan['variant'] == f'torch-{TORCH_VERSION}-{cu}-sm80_90ptx'
    assert plan['wheel_dir'] == str(tmp_path / 'cache' / 'wheels' / plan['variant'])

    # CUDA_HOME wins over PATH.
    plan = plan_of(run_build_script(tmp_path, '--dry-run', FORCE_CUDA='1',
                                    CUDA_HOME=osp.dirname(toolkit)))
    assert plan['cuda_home'] == osp.dirname(toolkit)


@pytest.mark.skipif(torch.version.cuda is not None, reason='needs a CPU-only build of torch')
def test_force_cuda_with_a_cpu_torch_fails_naming_the_fix(tmp_path):
    path = f'{fake_toolkit(tmp_path)}:{os.environ["PATH"]}'
    result = run_build_script(tmp_path, '--dry-run', PATH=path, FORCE_CUDA='1')
    assert result.returncode != 0 and 'install a CUDA build of torch' in result.stderr


def test_a_cached_wheel_is_reused_only_for_its_own_variant(tmp_path):
    wheels = tmp_path / 'wheels'
    tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    name = f'mmcv-2.1.0-{tag}-{tag}-linux_x86_64.whl'
    cuda_wheel = wheels / f'torch-{TORCH_VERSION}-cu130-sm90' / name
    cuda_wheel.parent.mkdir(parents=True)
    cuda_wheel.write_bytes(b'')
    cpu_wheel = wheels / f'torch-{TORCH_VERSION}-cpu' / name
    # Only a CUDA wheel in the cache: the CPU plan does not take it (here it would go on to
    # fetch the source; an offline pip with an empty MMCV_SDIST_DIR stops it there).
    result = run_build_script(tmp_path, str(wheels), PIP_NO_INDEX='1',
                              PIP_FIND_LINKS=str(tmp_path), MMCV_SDIST_DIR=str(tmp_path / 'sd'))
    assert result.returncode != 0 and 'could not fetch the mmcv 2.1.0 source' in result.stderr
    assert str(cuda_wheel) not in result.stdout
    cpu_wheel.parent.mkdir()
    cpu_wheel.write_bytes(b'')
    result = run_build_script(tmp_path, str(wheels))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(cpu_wheel)
    assert f'reusing {cpu_wheel}' in result.stderr


def test_no_package_index_host_name_in_the_project():
    if not osp.isdir(osp.join(REPO, '.git')) or shutil.which('git') is None:
        pytest.skip('not a git checkout')
    hosts = 'python' + r'hosted|pypi\.' + 'org'  # written so that this file does not match
    found = subprocess.run(['git', 'grep', '--untracked', '-nIE', hosts], cwd=REPO,
                           capture_output=True, text=True)
    assert found.returncode == 1, f'package-index host names in the project:\n{found.stdout}'


def test_install_stamp_covers_the_build_script():
    # A changed build script must make tools/install.sh reinstall, as a changed requirement does.
    install = open(osp.join(REPO, 'tools', 'install.sh')).read()
    inputs = re.search(r'requirement_files=\(([^)]*)\)', install).group(1)
    assert 'tools/build_mmcv.sh' in inputs
