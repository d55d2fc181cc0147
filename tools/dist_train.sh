#!/usr/bin/env bash
# Distributed training with torchrun (NCCL on GPUs, gloo on CPUs).
#
#   tools/dist_train.sh CONFIG NUM_PROCESSES [train.py args]
#
# NUM_PROCESSES is the number of processes on this machine (one per GPU). Several machines:
# start the same command on each, with the environment variables below (as in mmdet's script):
#   NNODES       number of machines (default 1)
#   NODE_RANK    this machine's index, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR  address of the NODE_RANK=0 machine (default 127.0.0.1; required when NODE_RANK>0)
#   PORT         a free TCP port on that machine, the same on every machine (default 29500)
#   PYTHON       interpreter (default: the checkout's .venv/bin/python if present, else python3)
set -euo pipefail

usage() {
    echo "usage: [NNODES=N NODE_RANK=I MASTER_ADDR=HOST PORT=P] $0 CONFIG NUM_PROCESSES [train.py args]" >&2
    echo "       e.g. $0 configs/digits/kd_resnet18_w32_w4.py 2 --work-dir work_dirs/kd" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
[[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "$0: NUM_PROCESSES must be a positive integer, got '$2'" >&2; usage; }

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
NPROC=$2

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$ROOT/tools/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
