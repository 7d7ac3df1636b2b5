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

# One attempt: a fresh ompi-server and both jobs. Open MPI 4.1.4's PMIx publish/lookup
# through ompi-server hangs now and then (1 run in 8-16 here, both jobs waiting in
# PMIx_Publish/PMIx_Get; see mpi_tests/run_twojobs.sh): an attempt that has not ended in
# 25-30 s (a passing one takes about a second) is killed and run again, three attempts in
# all; a job that fails is not retried.
# The server of the attempt under way, stopped on any exit (an interrupt included).
cur_uri=
trap '[[ -n "$cur_uri" ]] && "$root/scripts/ompi-server" --stop "$cur_uri"' EXIT
attempt() {
    local dir uri flag rc rc_prefill rc_decode pid_prefill
    dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-kv-two-jobs.XXXXXX")"
    uri="$dir/ompi-server.uri"
    cur_uri="$uri"
    flag="$("$root/scripts/ompi-server" "$uri")"
    rc=$?
    if [[ $rc -ne 0 ]]; then
        rm -rf "$dir"
        [[ $rc -eq 77 ]] && { echo "SKIP: no ompi-server"; return 77; }
        echo "could not start ompi-server" >&2
        return 1
    fi
    echo "two jobs: ompi-server up ($flag)"
    # Each job's lines carry its name: both print "[rank 0] ...".
    # shellcheck disable=SC2086  # $flag is two words
    timeout -k 5 30 "$mpiexec" -n 1 "${mpi_flags[@]}" $flag "$bin" --serve "$dir" \
        "${demo_args[@]}" > >(sed -u 's/^/[prefill job] /') 2>&1 &
    pid_prefill=$!
    # shellcheck disable=SC2086
    timeout -k 5 25 "$mpiexec" -n 1 "${mpi_flags[@]}" $flag "$bin" --connect "$dir" \
        "${demo_args[@]}" > >(sed -u 's/^/[decode job]  /') 2>&1
    rc_decode=$?
    wait "$pid_prefill"
    rc_prefill=$?
    "$root/scripts/ompi-server" --stop "$uri"
    cur_uri=
    rm -rf "$dir"
    sleep 0.1 # let the prefixing finish its last lines
    echo "two jobs: prefill job exit $rc_prefill, decode job exit $rc_decode"
    [[ $rc_prefill -eq 0 && $rc_decode -eq 0 ]] && return 0
    [[ $rc_prefill -eq 124 || $rc_prefill -eq 137 || $rc_decode -eq 124 ||
        $rc_decode -eq 137 ]] && return 124
    return 1
}
attempt
rc=$?
for again in 2 3; do
    [[ $rc -eq 124 ]] || break
    echo "two jobs: they hung (Open MPI's PMIx publish/lookup); attempt $again of 3"
    attempt
    rc=$?
done
exit $rc
