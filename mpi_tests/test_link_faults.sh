#!/usr/bin/env bash
# Links: 100 reconnect cycles, then a peer killed mid-transfer (test_link_faults.c). Every
# process is its own one-process job; MPIXFER_LINK_COPY picks the data path under test.
# Usage: test_link_faults.sh MPIEXEC TEST_BINARY [mpiexec flags...]
set -uo pipefail
set -m
mpiexec="$1"
bin="$2"
shift 2
dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-link-faults.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
job() { timeout -k 5 120 "$mpiexec" -n 1 "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

echo "== 100 load/invalidate cycles"
job "$@" "$bin" serve "$dir" a &
pid_a=$!
pids+=("$pid_a")
job "$@" "$bin" cycles "$dir" || fail "cycles"
wait "$pid_a" || fail "server a"
rm -f "$dir"/*.info

echo "== a peer killed mid-transfer"
job "$@" "$bin" serve "$dir" a &
pid_a=$!
pids+=("$pid_a")
job "$@" "$bin" serve "$dir" b &
pid_b=$!
pids+=("$pid_b")
job "$@" "$bin" victim "$dir" &
pid_v=$!
pids+=("$pid_v")
for _ in $(seq 600); do [[ -e "$dir/victim.ready" ]] && break; sleep 0.05; done
[[ -e "$dir/victim.ready" ]] || fail "the victim never got ready"
sleep 0.3
# The process of agent "a" itself, not its launcher: a crash, not a clean exit.
pid_srv="$(pgrep -f "$bin serve $dir a" | while read -r p; do
    [[ "$(cat /proc/$p/comm)" == "test_link_fault" ]] && echo "$p"; done | head -n 1)"
[[ -n "$pid_srv" ]] || fail "cannot find the server process of a"
kill -KILL "$pid_srv"
wait "$pid_v" || fail "victim"
wait "$pid_b" || fail "server b"
wait "$pid_a" 2>/dev/null
echo "PASS test_link_faults"
