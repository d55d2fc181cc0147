#!/usr/bin/env bash
# The GPU check on a machine without network, in one command: install the carried wheels, build
# mmcv with CUDA ops, run tools/gpu_check.py. Everything goes to /tmp; nothing is installed into
# the machine's Python.
#
#   OUT=/path/to/results bash tools/gpu_run.sh [-- gpu_check.py arguments]
#
# Needs, in the checkout: .whl/ with the pure-Python and cp312 wheels the machine lacks and the
# mmcv 2.1.0 source release (docs/performance.md, "CUDA", has the commands that fetch them); on
# the machine: python3 with a CUDA build of torch, nvcc, ninja and wheel.
#
# Steps (times on 16 cores):
#   1. .whl/*.whl -> $SITE (pip --target, --no-index --no-deps); MMRazor 1.0.0 into a folder of
#      its own ($MMRAZOR_DIR), which only benchmarks/vs_mmrazor.py puts on its path. ~10 s
#   2. mmcv 2.1.0 with CUDA ops for the visible GPUs: tools/build_mmcv.sh, offline from
#      .whl/mmcv-2.1.0.tar.gz (setuptools 80.9 from $SITE gives it pkg_resources), then
#      installed into $SITE. ~5 min
#   3. tools/gpu_check.py with PYTHONPATH=$SITE:<checkout>; its budget is the time left before
#      TOTAL_S, at most GPU_CHECK_BUDGET. ~5 min
#
# The commit under test, named in the reports: $MMKD_COMMIT, else the file .mmkd-commit at the
# checkout's root, else git (a snapshot made with `git archive` next to an old .git would get a
# wrong answer from git: write the commit into the snapshot, see docs/performance.md, "CUDA").
#
# Results in $OUT, 4 files: gpu_check.md (the report), gpu_check.log (the sections' output),
# mmcv_build.log, gpu_run.log (this script's output).
#
# Environment: OUT (default work_dirs/gpu_run), PYTHON (python3), WHEELS (.whl), SITE
# (/tmp/site), MMRAZOR_DIR (/tmp/mmrazor), MMCV_WHEEL_ROOT (/tmp/mmcv-wheels), TOTAL_S (585,
# seconds for the whole run), GPU_CHECK_BUDGET (425), MMKD_COMMIT.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/work_dirs/gpu_run}"
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-$ROOT/.whl}"
SITE="${SITE:-/tmp/site}"
MMRAZOR_DIR="${MMRAZOR_DIR:-/tmp/mmrazor}"
MMCV_WHEEL_ROOT="${MMCV_WHEEL_ROOT:-/tmp/mmcv-wheels}"
TOTAL_S="${TOTAL_S:-585}"
GPU_CHECK_BUDGET="${GPU_CHECK_BUDGET:-425}"
if [[ -z "${MMKD_COMMIT:-}" && -s "$ROOT/.mmkd-commit" ]]; then
    MMKD_COMMIT="$(head -n 1 "$ROOT/.mmkd-commit")"
fi
if [[ -z "${MMKD_COMMIT:-}" ]]; then
    MMKD_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    changed="$(git -C "$ROOT" status --porcelain -- mmkd configs benchmarks tools 2>/dev/null)"
    [[ -n "$changed" ]] && MMKD_COMMIT+=" with uncommitted changes"
fi
export MMKD_COMMIT  # tools/gpu_check.py and the benchmarks name it (benchmarks/_source.py)
[[ "${1:-}" == "--" ]] && shift
mkdir -p "$OUT"

log() { echo "[gpu_run +${SECONDS}s] $*"; }
PIP=("$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)

install_wheels() {
    # The mmcv source release is a .tar.gz: not matched here, read by build_mmcv.sh.
    local wheels
    mapfile -t wheels < <(ls "$WHEELS"/*.whl | grep -v '/mmrazor-')
    "${PIP[@]}" --target "$SITE" "${wheels[@]}" \
        || log "ERROR: installing the wheels into $SITE failed"
    if ls "$WHEELS"/mmrazor-*.whl >/dev/null 2>&1; then
        "${PIP[@]}" --target "$MMRAZOR_DIR" "$WHEELS"/mmrazor-*.whl \
            || log "ERROR: installing MMRazor into $MMRAZOR_DIR failed"
    fi
    log "installed ${#wheels[@]} wheels into $SITE"
}

build_mmcv() {
    # stdout: the wheel's path; the compiler's output goes to mmcv_build.log.
    local wheel
    if wheel="$(PYTHON="$PYTHON" MMCV_SDIST_DIR="$WHEELS" bash tools/build_mmcv.sh \
                "$MMCV_WHEEL_ROOT" 2>"$OUT/mmcv_build.log")"; then
        log "mmcv wheel: $wheel"
        "${PIP[@]}" --target "$SITE" "$wheel" || log "ERROR: installing $wheel failed"
    else
        log "ERROR: the mmcv build failed; the end of its log:"
        tail -n 30 "$OUT/mmcv_build.log"
    fi
    tail -n 3 "$OUT/mmcv_build.log"
}

run() {
    log "commit $MMKD_COMMIT; $("$PYTHON" -c \
        'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__,
                                   "cuda", torch.cuda.is_available())')"
    nvidia-smi -L 2>/dev/null
    install_wheels
    export PYTHONPATH="$SITE:$ROOT"
    build_mmcv
    local budget=$(( TOTAL_S - SECONDS - 15 ))
    (( budget > GPU_CHECK_BUDGET )) && budget=$GPU_CHECK_BUDGET
    (( budget < 60 )) && budget=60  # the first sections, at least; the report is kept as it goes
    log "tools/gpu_check.py with a budget of ${budget}s"
    timeout -k 5 $(( budget + 10 )) "$PYTHON" tools/gpu_check.py --out "$OUT/gpu_check.md" \
        --budget "$budget" --mmrazor-dir "$MMRAZOR_DIR" "$@"
    local status=$?
    log "tools/gpu_check.py exit $status; report $OUT/gpu_check.md"
    return $status
}

run "$@" 2>&1 | tee "$OUT/gpu_run.log"
exit "${PIPESTATUS[0]}"
