#!/usr/bin/env bash
# The KV-cache demo as two separately launched jobs (mpixfer-kv-demo --serve / --connect):
# the prefill job (1 process) in the background, the decode job (1 process) in the
# foreground, joined by a link through the connection info the prefill job writes to a
# file. No ompi-server. Used by the ctest test kv_demo_two_jobs and by
# `scripts/demo --two-jobs`. Exits 0 when both jobs succeed, else non-zero.
# Usage: run_two_jobs.sh MPIEXEC DEMO_BINARY [mpiexec flags...] [-- demo options...]
# DEMO_BINARY may be examples/kv_demo.py: it then runs under $PYTHON (default
# /usr/bin/python3, Debian's, which has mpi4py and torch).
set -uo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: run_two_jobs.sh MPIEXEC DEMO_BINARY [mpiexec flags...] [-- demo options...]" >&2
    exit 2
fi
mpiexec="$1"
bin="$2"
shift 2
mpi_flags=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    mpi_flags+=("$1")
    shift
done
[[ "${1:-}" == "--" ]] && shift
demo_args=("$@")
run=("$bin")
[[ "$bin" == *.py ]] && run=("${PYTHON:-/usr/bin/python3}" "$bin")

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Two Open MPI jobs launched apart know nothing of each other: each binds its rank 0 to
# core 0, so both would share one core (measured: 0.25 against 0.69 GB/s for the demo's
# 32 MiB WRITE). Unless the caller chose a binding, bind neither.
if "$mpiexec" --version 2>/dev/null | grep -qi "OpenRTE\|Open MPI" &&
    [[ " ${mpi_flags[*]} " != *" --bind-to "* ]]; then
    mpi_flags+=(--bind-to none)
fi
dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-kv-two-jobs.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
# Each job's lines carry its name: both print "[rank 0] ...". Bounded: a hang fails.
timeout -k 5 60 "$mpiexec" -n 1 "${mpi_flags[@]}" "${run[@]}" --serve "$dir" \
    "${demo_args[@]}" > >(sed -u 's/^/[prefill job] /') 2>&1 &
pid_prefill=$!
timeout -k 5 60 "$mpiexec" -n 1 "${mpi_flags[@]}" "${run[@]}" --connect "$dir" \
    "${demo_args[@]}" > >(sed -u 's/^/[decode job]  /') 2>&1
rc_decode=$?
wait "$pid_prefill"
rc_prefill=$?
sleep 0.1 # let the prefixing finish its last lines
echo "two jobs: prefill job exit $rc_prefill, decode job exit $rc_decode"
[[ $rc_prefill -eq 0 && $rc_decode -eq 0 ]]
