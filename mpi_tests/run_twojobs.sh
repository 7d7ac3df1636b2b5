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
# One attempt: a fresh ompi-server and both jobs. Open MPI 4.1.4's PMIx publish/lookup
# through ompi-server (under MPI_Comm_connect/accept) hangs now and then: 1 run in 8-16
# here, both jobs waiting in PMIx_Publish/PMIx_Get and mpiexec's PMIx thread on a mutex in
# pmix_pending_resolve. A passing attempt takes about a second, so one that has not ended
# in 25-30 s is killed and the jobs run again, three attempts in all (two were not enough
# once in 14 suite runs); a job that fails is not retried.
# The server of the attempt under way, stopped on any exit (an interrupt included).
cur_uri=
trap '[[ -n "$cur_uri" ]] && "$root/scripts/ompi-server" --stop "$cur_uri"' EXIT
attempt() {
    local dir uri flag rc rc_a rc_b pid_a
    dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-twojobs.XXXXXX")"
    uri="$dir/ompi-server.uri"
    cur_uri="$uri"
    flag="$("$root/scripts/ompi-server" "$uri")"
    rc=$?
    if [[ $rc -ne 0 ]]; then
        rm -rf "$dir"
        [[ $rc -eq 77 ]] && { echo "SKIP: no ompi-server"; return 77; }
        echo "could not start ompi-server"
        return 1
    fi
    # shellcheck disable=SC2086
    timeout -k 5 30 "$mpiexec" -n 2 "$@" $flag "$bin" serve "$dir" &
    pid_a=$!
    # shellcheck disable=SC2086
    timeout -k 5 25 "$mpiexec" -n 2 "$@" $flag "$bin" connect "$dir"
    rc_b=$?
    wait "$pid_a"
    rc_a=$?
    "$root/scripts/ompi-server" --stop "$uri"
    cur_uri=
    rm -rf "$dir"
    echo "job A exit $rc_a, job B exit $rc_b"
    [[ $rc_a -eq 0 && $rc_b -eq 0 ]] && return 0
    [[ $rc_a -eq 124 || $rc_a -eq 137 || $rc_b -eq 124 || $rc_b -eq 137 ]] && return 124
    return 1
}
attempt "$@"
rc=$?
for again in 2 3; do
    [[ $rc -eq 124 ]] || break
    echo "the jobs hung (Open MPI's PMIx publish/lookup, see above); attempt $again of 3"
    attempt "$@"
    rc=$?
done
exit $rc
