#!/usr/bin/env bash
# Two separately launched jobs connected through connection info (test_twojobs.c):
# one ompi-server, job A (2 ranks) serving, job B (2 ranks) connecting. Exits 77 when
# ompi-server is unavailable or MPIEXEC is not Open MPI's.
# Usage: run_twojobs.sh MPIEXEC TEST_BINARY [mpiexec flags...]
set -uo pipefail
mpiexec="$1"
bin="$2"
shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
# --ompi-server is Open MPI's; another launcher (MPICH's hydra) cannot take it.
if ! "$mpiexec" --version 2>&1 | grep -qi "open mpi\|openrte"; then
    echo "SKIP: $mpiexec is not Open MPI's (two jobs need ompi-server)"
    exit 77
fi
dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-twojobs.XXXXXX")"
uri="$dir/ompi-server.uri"
cleanup() {
    "$root/scripts/ompi-server" --stop "$uri"
    [[ -n "${pid_a:-}" ]] && kill "$pid_a" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
flag="$("$root/scripts/ompi-server" "$uri")"
rc=$?
[[ $rc -eq 77 ]] && { echo "SKIP: no ompi-server"; exit 77; }
[[ $rc -ne 0 ]] && { echo "could not start ompi-server"; exit 1; }
# shellcheck disable=SC2086
timeout 100 "$mpiexec" -n 2 "$@" $flag "$bin" serve "$dir" &
pid_a=$!
# shellcheck disable=SC2086
timeout 90 "$mpiexec" -n 2 "$@" $flag "$bin" connect "$dir"
rc_b=$?
wait "$pid_a"
rc_a=$?
pid_a=
echo "job A exit $rc_a, job B exit $rc_b"
[[ $rc_a -eq 0 && $rc_b -eq 0 ]]
