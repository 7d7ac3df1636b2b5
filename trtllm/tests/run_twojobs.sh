#!/usr/bin/env bash
# TensorRT-LLM's transferAgentTest cases with the agents in two separately launched jobs
# (transferAgentTwoJobsTest.cpp): side 0 and side 1, each its own MPI world, exchanging
# connection info and descriptor blobs through files in a fresh temporary folder. No
# ompi-server, no MPI dynamic processes, nothing shared but that folder.
#
# Usage: run_twojobs.sh mpiexec|plain MPIEXEC TEST_BINARY [mpiexec flags...] [-- gtest flags...]
#   mpiexec  each side is `MPIEXEC -n 1 [flags] TEST_BINARY ...`
#   plain    each side is TEST_BINARY alone: no mpiexec, the adapter starts MPI itself
# Exit: 0 when both sides pass, 77 when both skipped every case, else 1.
set -uo pipefail
set -m
mode="$1"
mpiexec="$2"
bin="$3"
shift 3
mpiflags=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    mpiflags+=("$1")
    shift
done
[[ $# -gt 0 ]] && shift
gtestflags=("$@")

dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-trtllm-twojobs.XXXXXX")"
pids=()
cleanup() {
    # A side left stopped (SIGSTOP in LoadTimeoutSilentPeer) or hung: wake, then kill it.
    for p in "${pids[@]}"; do
        kill -CONT -- "-$p" 2>/dev/null
        kill -KILL -- "-$p" 2>/dev/null
    done
    rm -rf "$dir"
}
trap cleanup EXIT

side() {
    # Bounded: a hang is a failure here, never retried.
    case "$mode" in
    mpiexec) timeout -k 5 150 "$mpiexec" -n 1 "${mpiflags[@]}" "$bin" "${gtestflags[@]}" "$1" "$dir" ;;
    plain) timeout -k 5 150 "$bin" "${gtestflags[@]}" "$1" "$dir" ;;
    *) echo "unknown mode '$mode' (mpiexec or plain)"; exit 2 ;;
    esac
}

side 0 > >(sed -u 's/^/[side 0] /') 2>&1 &
pid0=$!
pids+=("$pid0")
side 1 > >(sed -u 's/^/[side 1] /') 2>&1 &
pid1=$!
pids+=("$pid1")
wait "$pid1"
rc1=$?
wait "$pid0"
rc0=$?
echo "mode $mode: side 0 exit $rc0, side 1 exit $rc1"
if [[ $rc0 -eq 77 && $rc1 -eq 77 ]]; then
    exit 77
fi
[[ $rc0 -eq 0 && $rc1 -eq 0 ]]
