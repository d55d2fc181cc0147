#!/usr/bin/env bash
# Distributed training with torchrun (NCCL on GPUs, gloo on CPUs).
#
#   tools/dist_train.sh CONFIG NUM_PROCESSES [train.py args]
#
# NUM_PROCESSES is the number of processes on this machine (one per GPU). Several machines:
# start the same command on each, with NNODES, NODE_RANK, MASTER_ADDR, PORT (and PYTHON) set as
# tools/dist_launch.sh describes (as in mmdet's script).
set -euo pipefail

usage() {
    echo "usage: [NNODES=N NODE_RANK=I MASTER_ADDR=HOST PORT=P] $0 CONFIG NUM_PROCESSES [train.py args]" >&2
    echo "       e.g. $0 configs/digits/kd_resnet18_w32_w4.py 2 --work-dir work_dirs/kd" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
source "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh"
dist_launch train.py "$2" "$1" --launcher pytorch "${@:3}"
