#!/usr/bin/env bash
# Distributed testing with torchrun (NCCL on GPUs, gloo on CPUs).
#
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py args]
#
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHON as tools/dist_launch.sh
# describes.
set -euo pipefail

usage() {
    echo "usage: [NNODES=N NODE_RANK=I MASTER_ADDR=HOST PORT=P] $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py args]" >&2
    exit 2
}
[[ $# -ge 3 ]] || usage
source "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh"
dist_launch test.py "$3" "$1" "$2" --launcher pytorch "${@:4}"
