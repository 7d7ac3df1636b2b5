#!/usr/bin/env bash
# The KV-cache demo as two separately launched jobs (mpixfer-kv-demo --serve / --connect):
# one ompi-server, the prefill job (1 process) in the background, the decode job (1 process)
# in the foreground, both with --ompi-server file:URI. Used by the ctest test
# kv_demo_two_jobs and by `scripts/demo --two-jobs`. Exits 0 when both jobs succeed, 77 when
# ompi-server (Open MPI) is unavailable, else non-zero.
# Usage: run_two_jobs.sh MPIEXEC DEMO_BINARY [mpiexec flags...] [-- demo options...]
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

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
root="$(cd "$(dirname "$0")/.." && pwd)"

# --ompi-server is Open MPI's; another launcher (MPICH's hydra) cannot take it.
if ! "$mpiexec" --version 2>&1 | grep -qi "open mpi\|openrte"; then
    echo "SKIP: $mpiexec is not Open MPI's (two-job mode needs ompi-server)"
    exit 77
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-kv-two-jobs.XXXXXX")"
uri="$dir/ompi-server.uri"
cleanup() {
    [[ -n "${pid_prefill:-}" ]] && kill "$pid_prefill" 2>/dev/null
    "$root/scripts/ompi-server" --stop "$uri"
    rm -rf "$dir"
}
trap cleanup EXIT
flag="$("$root/scripts/ompi-server" "$uri")"
rc=$?
[[ $rc -eq 77 ]] && { echo "SKIP: no ompi-server"; exit 77; }
[[ $rc -ne 0 ]] && { echo "could not start ompi-server" >&2; exit 1; }
echo "two jobs: ompi-server up ($flag)"

# Each job's lines carry its name: both print "[rank 0] ...".
# shellcheck disable=SC2086  # $flag is two words
timeout 100 "$mpiexec" -n 1 "${mpi_flags[@]}" $flag "$bin" --serve "$dir" "${demo_args[@]}" \
    > >(sed -u 's/^/[prefill job] /') 2>&1 &
pid_prefill=$!
# shellcheck disable=SC2086
timeout 90 "$mpiexec" -n 1 "${mpi_flags[@]}" $flag "$bin" --connect "$dir" "${demo_args[@]}" \
    > >(sed -u 's/^/[decode job]  /') 2>&1
rc_decode=$?
wait "$pid_prefill"
rc_prefill=$?
pid_prefill=
sleep 0.1 # let the prefixing finish its last lines
echo "two jobs: prefill job exit $rc_prefill, decode job exit $rc_decode"
[[ $rc_prefill -eq 0 && $rc_decode -eq 0 ]]
