#!/usr/bin/env bash
# Two separately launched jobs connected by links (test_twojobs.c): job A (2 ranks)
# serving, job B (2 ranks) connecting through connection info written to files. No
# ompi-server, no MPI dynamic processes: each job is its own MPI world; works with any
# mpiexec (Open MPI's, MPICH's hydra).
# Usage: run_twojobs.sh MPIEXEC TEST_BINARY [mpiexec flags...]
set -uo pipefail
mpiexec="$1"
bin="$2"
shift 2
dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-twojobs.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
# Bounded: a hang is a failure here, never retried.
timeout -k 5 60 "$mpiexec" -n 2 "$@" "$bin" serve "$dir" &
pid_a=$!
timeout -k 5 60 "$mpiexec" -n 2 "$@" "$bin" connect "$dir"
rc_b=$?
wait "$pid_a"
rc_a=$?
echo "job A exit $rc_a, job B exit $rc_b"
[[ $rc_a -eq 0 && $rc_b -eq 0 ]]
