#!/usr/bin/env bash
# Install mmkd and the OpenMMLab stack on current PyTorch into .venv/ at the repo root.
#
# Idempotent: a second run with unchanged requirements returns at once. mmcv 2.1.0 has no wheel
# for torch 2.14, so tools/build_mmcv.sh compiles it once from its source release (fetched with
# pip), with CUDA ops when a GPU and nvcc are there, else CPU ops (about 15 minutes on 2 cores),
# and keeps the wheel in ${MMKD_CACHE:-~/.cache/mmkd}/wheels/<variant> (torch-2.14.1-cpu,
# torch-2.14.1-cu130-sm90, ...) for every later install of that variant.
#
# Environment:
#   MMKD_VENV   where to create the virtual environment (default: <repo>/.venv)
#   MMKD_CACHE  cache folder for the built mmcv wheel (default: ~/.cache/mmkd)
#   PYTHON      interpreter to create the venv with (default: python3.11)
#   FORCE_CUDA, CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS, MMCV_SDIST_DIR: see tools/build_mmcv.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMKD_VENV:-$ROOT/.venv}"
CACHE="${MMKD_CACHE:-$HOME/.cache/mmkd}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION=2.14.1

log() { echo "[mmkd install] $*"; }
die() { echo "[mmkd install] ERROR: $*" >&2; exit 1; }
trap 'die "step failed at line $LINENO (see the output above); fix it and run tools/install.sh again, finished steps are skipped"' ERR

requirement_files=("$ROOT"/requirements/*.txt "$ROOT/setup.py" "${BASH_SOURCE[0]}"
                   "$ROOT/tools/build_mmcv.sh")
stamp_of_inputs() { cat "${requirement_files[@]}" | sha256sum | cut -d' ' -f1; }
STAMP="$VENV/.mmkd-install-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_of_inputs)" ]]; then
    log "up to date ($VENV); delete $STAMP to force a reinstall"
    exit 0
fi

SECONDS=0
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set PYTHON=/path/to/python3.11"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

log "installing torch $TORCH_VERSION and the build tools"
"${PIP[@]}" install -q -r "$ROOT/requirements/torch.txt" -r "$ROOT/requirements/build.txt"

# mmcv 2.1.0 with its compiled ops, from the wheel cache or built once (tools/build_mmcv.sh).
mmcv_wheel="$(PYTHON="$VENV/bin/python" MMKD_CACHE="$CACHE" bash "$ROOT/tools/build_mmcv.sh" "$CACHE/wheels")"
"${PIP[@]}" install -q --no-deps --force-reinstall "$mmcv_wheel"

log "installing mmengine, mmpretrain, mmdet, mmsegmentation and the test tools"
"${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
    -c "$ROOT/requirements/lock.txt"
# mmcv's own runtime dependencies (installed with --no-deps above).
"${PIP[@]}" install -q addict packaging pyyaml yapf -c "$ROOT/requirements/lock.txt"

log "installing mmkd (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

log "checking the stack imports"
"$VENV/bin/python" - <<'PY'
import torch, torchvision, mmengine, mmcv, mmcv.ops, mmdet, mmseg, mmpretrain, mmkd
print('  torch', torch.__version__, '| torchvision', torchvision.__version__, '| mmengine',
      mmengine.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__,
      '| mmseg', mmseg.__version__, '| mmpretrain', mmpretrain.__version__, '| mmkd', mmkd.__version__)
cuda = mmcv.ops.get_compiling_cuda_version()
print('  mmcv ops:', 'CPU only' if cuda == 'not available' else f'CPU and CUDA {cuda}',
      '| GPUs visible to torch:', torch.cuda.device_count())
PY
stamp_of_inputs > "$STAMP"
log "done in ${SECONDS}s: activate with 'source $VENV/bin/activate'"
