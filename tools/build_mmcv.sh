#!/usr/bin/env bash
# Build the mmcv 2.1.0 wheel (with its compiled ops) for the torch of $PYTHON, once per variant.
#
#   bash tools/build_mmcv.sh [--dry-run] [WHEEL_ROOT]
#
# mmcv 2.1.0 has no wheel for current torch, so it is compiled from its source release, fetched
# through pip (pip's own configuration applies: mirrors, proxies, PIP_INDEX_URL, or offline with
# PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR), checked against its sha256 and patched to C++20 (current
# torch headers need it). The ops are compiled for CUDA when CUDA is usable, else for the CPU:
#
#   CUDA  a GPU is visible (nvidia-smi -L, or torch.cuda.is_available()) or FORCE_CUDA=1, torch is
#         a CUDA build, and nvcc is found ($CUDA_HOME/bin, PATH, /usr/local/cuda/bin, or the
#         nvidia pip wheels). TORCH_CUDA_ARCH_LIST defaults to the visible GPUs' compute
#         capabilities (all of torch's own architectures when none is visible). When the toolkit
#         lacks headers torch includes (cusparse.h, cublas_v2.h, ... with an nvcc-only toolkit
#         from pip), the nvidia wheels' include folders are added to CPATH.
#   CPU   otherwise, or FORCE_CUDA=0 (GPUs are then hidden from the build).
#
# The wheel is kept in WHEEL_ROOT/<variant>/, the variant naming torch's version and the ops:
# torch-2.14.1-cpu, torch-2.11.0-cu130-sm90, torch-2.11.0-cu130-sm80_90 ... so a CPU wheel is
# never reused where CUDA ops are wanted, nor the reverse. A wheel already there is reused.
#
# Output: progress on stderr; on stdout one line, the path of the wheel. With --dry-run (or
# MMKD_BUILD_DRY_RUN=1) nothing is fetched or compiled: stdout has the decision as KEY=VALUE
# lines (variant, ops, torch_cuda_arch_list, cpath_add, nvcc, wheel_dir, ...).
#
# Environment:
#   PYTHON                interpreter whose torch the wheel is for (default: python3). The build
#                         needs setuptools < 81 (mmcv's setup.py imports pkg_resources), wheel and
#                         ninja in it: requirements/build.txt is installed into it when missing.
#   FORCE_CUDA            unset: decide as above; 1: CUDA ops or an error; 0: CPU ops
#   CUDA_HOME             the CUDA toolkit (default: found from nvcc)
#   TORCH_CUDA_ARCH_LIST  architectures to compile for, e.g. "9.0" or "8.0;9.0+PTX"
#   MAX_JOBS              parallel compile jobs (default: nproc)
#   MMCV_SDIST_DIR        folder holding, or receiving, mmcv-2.1.0.tar.gz (default: $MMKD_CACHE/sdist)
#   MMKD_CACHE            default cache folder (default: ~/.cache/mmkd); WHEEL_ROOT defaults to
#                         $MMKD_CACHE/wheels
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MMKD_CACHE:-$HOME/.cache/mmkd}"
PYTHON="${PYTHON:-python3}"
MMCV_VERSION=2.1.0
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
DRY_RUN="${MMKD_BUILD_DRY_RUN:-0}"
WHEEL_ROOT=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "[mmkd build_mmcv] ERROR: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) WHEEL_ROOT="$arg" ;;
    esac
done
WHEEL_ROOT="${WHEEL_ROOT:-$CACHE/wheels}"
SDIST_DIR="${MMCV_SDIST_DIR:-$CACHE/sdist}"

log() { echo "[mmkd build_mmcv] $*" >&2; }
die() { echo "[mmkd build_mmcv] ERROR: $*" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set PYTHON=/path/to/python"
# A relative path (.venv/bin/python) must survive the cd into the source tree; symlinks are
# kept (a venv's python is a symlink to the base interpreter).
if [[ "$PYTHON" == */* ]]; then PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"; fi

# The decision: which ops, for which architectures, with which CUDA toolkit. KEY=VALUE lines.
build_plan() {
    "$PYTHON" - <<'PY'
import glob
import os
import re
import shutil
import subprocess
import sys

try:
    import torch
except ImportError:
    sys.exit(f'[mmkd build_mmcv] ERROR: torch is not installed in {sys.executable}; '
             'install torch first (requirements/torch.txt)')

# Headers torch's ATen/cuda includes besides the CUDA runtime's; an nvcc-only toolkit lacks them.
LIBRARY_HEADERS = ('cusparse.h', 'cublas_v2.h', 'cublasLt.h', 'cusolverDn.h', 'curand.h')
notes = []


def nvidia_wheel_dirs(sub):
    """Folders ``site-packages/nvidia/*/<sub>`` of the nvidia pip wheels (e.g. nvidia/cu13)."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, '*', sub)))


def visible_gpu_capabilities():
    """Compute capabilities ('9.0') of the visible GPUs; [] when none is visible."""
    if torch.cuda.is_available():
        return [f'{major}.{minor}' for major, minor in
                (torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))]
    if shutil.which('nvidia-smi') is None:
        return []
    listed = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True)
    if listed.returncode != 0 or 'GPU' not in listed.stdout:
        return []
    caps = subprocess.run(['nvidia-smi', '--query-gpu=compute_cap', '--format=csv,noheader'],
                          capture_output=True, text=True)
    found = re.findall(r'\d+\.\d+', caps.stdout) if caps.returncode == 0 else []
    return found or ['unknown']


def find_nvcc():
    """(nvcc path, CUDA home) or (None, None): the first nvcc whose toolkit has the CUDA
    runtime's headers (an nvcc wrapper script in /usr/local/bin is not a toolkit), else the
    first nvcc at all."""
    home = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    candidates = [os.path.join(home, 'bin', 'nvcc')] if home else []
    candidates += [shutil.which('nvcc') or '', '/usr/local/cuda/bin/nvcc']
    candidates += [os.path.join(d, 'nvcc') for d in nvidia_wheel_dirs('bin')]
    found = []
    for nvcc in candidates:
        if nvcc and os.access(nvcc, os.X_OK):
            nvcc = os.path.realpath(nvcc)
            found.append((nvcc, os.path.dirname(os.path.dirname(nvcc))))
    if home and os.access(os.path.join(home, 'bin', 'nvcc'), os.X_OK):
        return os.path.join(home, 'bin', 'nvcc'), home
    if home:
        notes.append(f'CUDA_HOME={home} has no bin/nvcc; looking for nvcc elsewhere')
    for nvcc, cuda_home in found:
        if include_dirs_with(cuda_home, 'cuda_runtime.h'):
            return nvcc, cuda_home
    return found[0] if found else (None, None)


def arch_key(arch_list):
    """'8.0;9.0+PTX' -> 'sm80_90ptx' (sorted, so the same set gives the same key)."""
    tokens = sorted(set(t for t in re.split(r'[;,\s]+', arch_list) if t),
                    key=lambda t: [int(n) for n in re.findall(r'\d+', t)] or [0])
    return 'sm' + '_'.join(t.lower().replace('.', '').replace('+', '') for t in tokens)


def include_dirs_with(cuda_home, header):
    """The toolkit's include folders (and CPATH's) that hold ``header``."""
    roots = [os.path.join(cuda_home, 'include')]
    roots += glob.glob(os.path.join(cuda_home, 'targets', '*', 'include'))
    roots += [p for p in os.environ.get('CPATH', '').split(':') if p]
    return [r for r in roots if os.path.isfile(os.path.join(r, header))]


def missing_headers(cuda_home):
    return [h for h in LIBRARY_HEADERS if not include_dirs_with(cuda_home, h)]


def plan():
    torch_version = torch.__version__.split('+')[0]
    py_tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    force = os.environ.get('FORCE_CUDA', '')
    gpus = [] if force == '0' else visible_gpu_capabilities()
    want_cuda = force == '1' or (force != '0' and bool(gpus))
    out = dict(torch=torch.__version__, python_tag=py_tag, gpus=','.join(gpus) or 'none')

    def cpu(reason):
        out.update(ops='cpu', variant=f'torch-{torch_version}-cpu', reason=reason)
        return out

    def fail(reason):
        sys.exit(f'[mmkd build_mmcv] ERROR: FORCE_CUDA=1 but {reason}')

    if not want_cuda:
        return cpu('FORCE_CUDA=0' if force == '0' else
                   'no GPU visible (nvidia-smi -L, torch.cuda.is_available()) and FORCE_CUDA unset')
    if torch.version.cuda is None:
        why = f'torch {torch.__version__} of {sys.executable} is a CPU-only build'
        if force == '1':
            fail(why + '; install a CUDA build of torch')
        notes.append(f'a GPU is visible but {why}: CPU ops only. Install a CUDA build of '
                     'torch for CUDA ops.')
        return cpu(why)
    nvcc, cuda_home = find_nvcc()
    if nvcc is None:
        why = 'nvcc was not found (CUDA_HOME, PATH, /usr/local/cuda/bin, nvidia wheels)'
        if force == '1':
            fail(why + '; install the CUDA toolkit (or the nvidia-cuda-nvcc wheel) and set '
                 'CUDA_HOME')
        notes.append(f'a GPU is visible but {why}: CPU ops only. Install the CUDA toolkit '
                     'and set CUDA_HOME for CUDA ops.')
        return cpu(why)
    arch_list = os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if arch_list:
        arch_source = 'TORCH_CUDA_ARCH_LIST'
    elif gpus and 'unknown' not in gpus:
        arch_list, arch_source = ';'.join(sorted(set(gpus))), 'the visible GPUs'
    else:
        arch_list = ';'.join(f'{a[3:-1]}.{a[-1]}' for a in torch.cuda.get_arch_list()
                             if a.startswith('sm_'))
        arch_source = "torch's own architectures (no GPU visible)"
        notes.append('no GPU visible: compiling for every architecture torch supports; '
                     'set TORCH_CUDA_ARCH_LIST (e.g. 9.0) to compile for one, faster')
    cpath_add = []
    missing = missing_headers(cuda_home)
    if missing:
        cpath_add = [d for d in nvidia_wheel_dirs('include')
                     if any(os.path.isfile(os.path.join(d, h)) for h in missing)]
        if not cpath_add:
            notes.append(f'the CUDA toolkit in {cuda_home} lacks {", ".join(missing)} and no '
                         'nvidia wheel provides them; the compile will fail: install the '
                         'CUDA libraries\' headers (e.g. the nvidia-*-cu* wheels)')
    cu_tag = 'cu' + torch.version.cuda.replace('.', '')
    out.update(ops='cuda', variant=f'torch-{torch_version}-{cu_tag}-{arch_key(arch_list)}',
               reason='FORCE_CUDA=1' if force == '1' else 'GPU visible',
               torch_cuda_arch_list=arch_list, arch_source=arch_source, nvcc=nvcc,
               cuda_home=cuda_home, missing_headers=','.join(missing),
               cpath_add=':'.join(cpath_add))
    return out


for key, value in plan().items():
    print(f'{key}={value}')
for note in notes:
    print(f'[mmkd build_mmcv] NOTE: {note}', file=sys.stderr)
PY
}

plan_text="$(build_plan)" || die "could not decide the build (see above)"
declare -A PLAN=()
while IFS='=' read -r key value; do PLAN["$key"]="$value"; done <<< "$plan_text"
WHEEL_DIR="$WHEEL_ROOT/${PLAN[variant]}"

if [[ "$DRY_RUN" == 1 ]]; then
    echo "$plan_text"
    echo "wheel_dir=$WHEEL_DIR"
    echo "max_jobs=${MAX_JOBS:-$(nproc)}"
    exit 0
fi

wheel_in_cache() { ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-"${PLAN[python_tag]}"-*.whl 2>/dev/null | head -n 1; }
if [[ -n "$(wheel_in_cache)" ]]; then
    log "reusing $(wheel_in_cache) (variant ${PLAN[variant]})"
    wheel_in_cache
    exit 0
fi

ensure_build_tools() {
    if "$PYTHON" -c 'import pkg_resources, wheel' 2>/dev/null \
            && { "$PYTHON" -c 'import ninja' 2>/dev/null || command -v ninja >/dev/null; }; then
        return
    fi
    log "installing the build tools into $PYTHON (requirements/build.txt: setuptools < 81, wheel, ninja)"
    "$PYTHON" -m pip install -q -r "$ROOT/requirements/build.txt" >&2 \
        || die "could not install requirements/build.txt into $PYTHON; install it by hand"
}

# torch compiles in parallel only when it finds the ninja executable on PATH: that of the ninja
# package installed with $PYTHON goes first (not on PATH in a venv that is not activated; in
# <target>/bin with pip install --target).
ninja_dir() {
    "$PYTHON" - 2>/dev/null <<'PY' || true
import os
import ninja
folder = ninja.BIN_DIR
if not os.path.isfile(os.path.join(folder, 'ninja')):
    folder = os.path.join(os.path.dirname(os.path.dirname(ninja.__file__)), 'bin')
print(folder)
PY
}
build_path="$PATH"
ninja_bin="$(ninja_dir)"
if [[ -n "$ninja_bin" && -x "$ninja_bin/ninja" ]]; then build_path="$ninja_bin:$build_path"; fi
# The environment mmcv's setup.py reads; GPUs are hidden for CPU ops (setup.py would compile CUDA
# ops whenever torch sees a GPU).
build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
if [[ "${PLAN[ops]}" == cuda ]]; then
    build_path="$(dirname "${PLAN[nvcc]}"):$build_path"
    build_env+=(FORCE_CUDA=1 CUDA_HOME="${PLAN[cuda_home]}"
                TORCH_CUDA_ARCH_LIST="${PLAN[torch_cuda_arch_list]}")
    if [[ -n "${PLAN[cpath_add]}" ]]; then
        build_env+=(CPATH="${CPATH:+$CPATH:}${PLAN[cpath_add]}")
    fi
else
    build_env+=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
fi
build_env+=(PATH="$build_path")

fetch_sdist() {
    local sdist="$SDIST_DIR/mmcv-$MMCV_VERSION.tar.gz"
    mkdir -p "$SDIST_DIR"
    if [[ ! -f "$sdist" ]]; then
        log "fetching the mmcv $MMCV_VERSION source release with pip into $SDIST_DIR"
        # pip prepares the sdist's metadata by running its setup.py: no build isolation (the
        # isolated setuptools lacks pkg_resources) and no GPU (no CUDA toolkit needed for it).
        env MMCV_WITH_OPS=1 FORCE_CUDA=0 CUDA_VISIBLE_DEVICES= \
            "$PYTHON" -m pip download -q --no-binary :all: --no-deps --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$SDIST_DIR" >&2 \
            || die "pip could not fetch the mmcv $MMCV_VERSION source release (offline: put" \
                   "mmcv-$MMCV_VERSION.tar.gz into MMCV_SDIST_DIR or PIP_FIND_LINKS)"
    fi
    echo "$MMCV_SDIST_SHA256  $sdist" | sha256sum -c --quiet - >&2 \
        || die "checksum mismatch for $sdist (expected sha256 $MMCV_SDIST_SHA256); delete it and run again"
    echo "$sdist"
}

ensure_build_tools
sdist="$(fetch_sdist)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xzf "$sdist" -C "$work"
src="$work/mmcv-$MMCV_VERSION"
# torch >= 2.10's headers need C++20; mmcv's setup.py asks for C++14/17 (host and nvcc).
sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"

if [[ "${PLAN[ops]}" == cuda ]]; then
    log "building mmcv $MMCV_VERSION with CUDA ops: variant ${PLAN[variant]}, TORCH_CUDA_ARCH_LIST=${PLAN[torch_cuda_arch_list]} (${PLAN[arch_source]}), nvcc ${PLAN[nvcc]}${PLAN[cpath_add]:+, CPATH += ${PLAN[cpath_add]}}"
else
    log "building mmcv $MMCV_VERSION with CPU ops: variant ${PLAN[variant]} (${PLAN[reason]})"
fi
log "MAX_JOBS=${MAX_JOBS:-$(nproc)}; about 15 minutes on 2 cores (CPU ops), 5 on 16 cores (CUDA ops, one architecture)"
SECONDS=0
(cd "$src" && env "${build_env[@]}" "$PYTHON" -m pip wheel -q --no-build-isolation --no-deps \
    -w "$work/dist" . >&2) || die "the mmcv build failed (see the compiler output above)"
built="$(ls "$work"/dist/mmcv-"$MMCV_VERSION"-*.whl)"
mkdir -p "$WHEEL_DIR"
mv "$built" "$WHEEL_DIR/"
log "built $WHEEL_DIR/$(basename "$built") (variant ${PLAN[variant]}) in ${SECONDS}s"
echo "$WHEEL_DIR/$(basename "$built")"
