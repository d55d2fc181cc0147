# Shared by tools/dist_train.sh and tools/dist_test.sh (sourced, not run): check the multi-node
# settings, pick the interpreter and start torchrun.
#
#   dist_launch TOOL NUM_PROCESSES TOOL_ARGS...   (TOOL_ARGS include --launcher pytorch)
#
# Environment (as in mmdet's scripts):
#   NNODES       number of machines (default 1)
#   NODE_RANK    this machine's index, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR  address of the NODE_RANK=0 machine (default 127.0.0.1; required when NODE_RANK>0)
#   PORT         a free TCP port on that machine, the same on every machine (default 29500)
#   PYTHON       interpreter (default: the checkout's .venv/bin/python if present, else python3)

dist_launch() {
    local tool=$1 nproc=$2
    shift 2
    [[ "$nproc" =~ ^[1-9][0-9]*$ ]] || {
        echo "$0: NUM_PROCESSES must be a positive integer, got '$nproc'" >&2; usage; }
    local nnodes=${NNODES:-1} node_rank=${NODE_RANK:-0}
    [[ "$nnodes" =~ ^[1-9][0-9]*$ && "$node_rank" =~ ^[0-9]+$ && node_rank -lt nnodes ]] || {
        echo "$0: need 0 <= NODE_RANK < NNODES, got NODE_RANK='$node_rank' NNODES='$nnodes'" >&2
        exit 2; }
    if [[ $nnodes -gt 1 && $node_rank -gt 0 && -z "${MASTER_ADDR:-}" ]]; then
        echo "$0: NNODES=$nnodes: set MASTER_ADDR to the address of the NODE_RANK=0 machine" >&2
        exit 2
    fi
    local root python
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    python=${PYTHON:-}
    if [[ -z "$python" ]]; then
        if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
    fi
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$python" -m torch.distributed.run \
        --nnodes="$nnodes" \
        --node_rank="$node_rank" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --master_port="${PORT:-29500}" \
        --nproc_per_node="$nproc" \
        "$root/tools/$tool" "$@"
}
