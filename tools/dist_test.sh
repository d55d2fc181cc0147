#!/usr/bin/env bash
# Distributed testing with torchrun (NCCL on GPUs, gloo on CPUs).
#
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py args]
#
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHON as in tools/dist_train.sh.
set -euo pipefail

usage() {
    echo "usage: [NNODES=N NODE_RANK=I MASTER_ADDR=HOST PORT=P] $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py args]" >&2
    exit 2
}
[[ $# -ge 3 ]] || usage
[[ "$3" =~ ^[1-9][0-9]*$ ]] || { echo "$0: NUM_PROCESSES must be a positive integer, got '$3'" >&2; usage; }

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
[[ "$NNODES" =~ ^[1-9][0-9]*$ && "$NODE_RANK" =~ ^[0-9]+$ && NODE_RANK -lt NNODES ]] || {
    echo "$0: need 0 <= NODE_RANK < NNODES, got NODE_RANK='$NODE_RANK' NNODES='$NNODES'" >&2; exit 2; }
if [[ $NNODES -gt 1 && $NODE_RANK -gt 0 && -z "${MASTER_ADDR:-}" ]]; then
    echo "$0: NNODES=$NNODES: set MASTER_ADDR to the address of the NODE_RANK=0 machine" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$ROOT/tools/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
