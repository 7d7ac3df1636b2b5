#!/usr/bin/env bash
# Links admit only holders of the key, and survive hostile clients (test_link_auth.c,
# hostile_link_client.py). Every process is its own one-process job (no ompi-server):
#   1. the server job (agent "srv", listening);
#   2. a job with a wrong key= digit: never usable for 5 s, WRITE refused, then the right
#      key reads (bytes checked);
#   3. a legitimate client alone (its rate: unloaded);
#   4. the hostile client flooding the listener while the legitimate client transfers;
#   5. the server's resident memory before and after within 64 MiB, refusals counted, the
#      loaded rate at least half the unloaded one.
# Usage: test_link_auth.sh MPIEXEC TEST_BINARY HOSTILE_CLIENT [mpiexec flags...]
set -uo pipefail
set -m # each background job its own process group: cleanup stops all of it
mpiexec="$1"
bin="$2"
hostile="$3"
shift 3
dir="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-link-auth.XXXXXX")"
pid_srv=
cleanup() {
    [[ -n "$pid_srv" ]] && kill -TERM -- "-$pid_srv" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
job() { timeout -k 5 120 "$mpiexec" -n 1 "$@" ; }
fail() { echo "FAIL: $*"; exit 1; }

job "$@" "$bin" serve "$dir" &
pid_srv=$!

echo "== wrong key"
job "$@" "$bin" wrongkey "$dir" || fail "wrong-key job"

echo "== unloaded"
out="$(job "$@" "$bin" client "$dir" 3)" || fail "unloaded client: $out"
echo "$out"
unloaded="$(awk '/^rate/ {print $2}' <<<"$out")"

echo "== under the flood"
info="$(head -n 1 "$dir/srv.info")"
timeout -k 5 120 /usr/bin/python3 "$hostile" "$info" >"$dir/hostile.log" 2>&1 &
pid_h=$!
out="$(job "$@" "$bin" client "$dir" 6)" || fail "loaded client: $out"
echo "$out"
loaded="$(awk '/^rate/ {print $2}' <<<"$out")"
wait "$pid_h"
rc_h=$?
cat "$dir/hostile.log"
[[ $rc_h -eq 0 ]] || fail "hostile client exit $rc_h"

job "$@" "$bin" bye "$dir" || fail "bye job"
wait "$pid_srv"
rc_srv=$?
pid_srv=
[[ $rc_srv -eq 0 ]] || fail "server exit $rc_srv"
cat "$dir/srv.out"
before="$(awk '/^rss_before_kib/ {print $2}' "$dir/srv.out")"
after="$(awk '/^rss_after_kib/ {print $2}' "$dir/srv.out")"
refused="$(awk '/^refused/ {print $2}' "$dir/srv.out")"
echo "server memory: ${before} KiB before, ${after} KiB after; ${refused} connections refused"
echo "transfer rate: ${unloaded} GB/s unloaded, ${loaded} GB/s under the flood"
(( after - before < 65536 )) || fail "resident memory grew by $(( (after - before) / 1024 )) MiB"
(( refused >= 600 )) || fail "only $refused refusals counted"
awk -v u="$unloaded" -v l="$loaded" 'BEGIN { exit !(l >= u / 2) }' ||
    fail "under the flood the rate fell below half the unloaded one"
echo "PASS test_link_auth"
