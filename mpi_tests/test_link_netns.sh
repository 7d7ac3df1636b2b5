#!/usr/bin/env bash
# Links between two "hosts" (issue 13): separately launched one-process jobs in two network
# namespaces joined only by a veth pair, so a link's bytes can only travel by UCX over TCP
# on that pair (test_link_netns.c holds the checks).
#
#   test_link_netns.sh <mpiexec> <test_link_netns binary> ucx|auto [extra mpiexec flags...]
#
# Namespaces mpl<pid>a (10.77.0.1) and mpl<pid>b (10.77.0.2), veth mpxv0 in both. The
# servers run in a, the clients in b; every job is `mpiexec -n 1` under `ip netns exec`,
# with MPIXFER_LISTEN_HOST=10.77.0.x, UCX_TLS=tcp,self and UCX_NET_DEVICES=mpxv0.
#   ucx:  MPIXFER_LINK_COPY=ucx; b shares the kernel's boot id, so the library knows it is
#         the same host (UCX endpoints with UCP_ERR_HANDLING_MODE_NONE, over TCP).
#   auto: MPIXFER_LINK_COPY=auto, and the client jobs also get a PID namespace of their own
#         and a boot id of their own (a file bind-mounted over
#         /proc/sys/kernel/random/boot_id in b's mount namespace): to the library b is
#         another host, cross-memory copies cannot work (the cookie probe fails), and the
#         link must choose UCX by itself, with peer error handling.
# Checks: 4 rounds of load (by connection info, by blob) / 1024 x 16 KiB scattered WRITE
# (the server checks every byte) / READ (the client checks every byte) / invalidate, sync
# messages both ways; stats link_ops > 0 and link_copies == 0; the veth counters of b moved
# at least the bytes the client wrote and read; then a server killed mid-transfer ends the
# victim's request in FAILURE within the stall timeout while the other server keeps serving.
#
# Exit 77 (skip) under ThreadSanitizer, or when namespaces cannot be created (not root, no
# iproute2, no CAP_NET_ADMIN), or, for auto, when a PID namespace or the bind mount cannot
# be made. Every job is bounded by `timeout`; both namespaces are deleted on exit.
set -uo pipefail

MPIEXEC=$1
EXE=$2
MODE=$3
shift 3

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}

case "$MODE" in
ucx | auto) ;;
*) fail "mode must be ucx or auto, not '$MODE'" ;;
esac
if [ "${MPIXFER_TEST_TSAN:-0}" = 1 ]; then
    # As test_netns: Debian 12's UCX 1.13 is not built with TSan, and its TCP transport's
    # threads and callbacks are invisible to it; TSan builds are not run over UCX TCP here.
    skip "ThreadSanitizer builds are not run over UCX TCP (as test_netns)"
fi
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "no 'ip' command (iproute2)"
if [ "$MODE" = auto ]; then
    command -v unshare >/dev/null 2>&1 || skip "no 'unshare' command (util-linux)"
fi

NSA=mpl$$a
NSB=mpl$$b
TMP=$(mktemp -d /tmp/mpixfer-link-netns.XXXXXX) || exit 1
chmod 755 "$TMP"

cleanup() {
    for ns in "$NSA" "$NSB"; do
        # Processes left in our namespaces are ours (a failed run): end them by id.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ip netns add "$NSA" 2>"$TMP/err" || skip "cannot create a network namespace: $(cat "$TMP/err")"
ip netns add "$NSB" 2>"$TMP/err" || skip "cannot create a network namespace: $(cat "$TMP/err")"
if ! ip link add "mlv$$a" netns "$NSA" type veth peer name "mlv$$b" netns "$NSB" \
    2>"$TMP/err"; then
    skip "cannot create a veth pair: $(cat "$TMP/err")"
fi
set -e
ip -n "$NSA" link set "mlv$$a" name mpxv0
ip -n "$NSB" link set "mlv$$b" name mpxv0
ip -n "$NSA" addr add 10.77.0.1/24 dev mpxv0
ip -n "$NSB" addr add 10.77.0.2/24 dev mpxv0
for ns in "$NSA" "$NSB"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set mpxv0 up
done
set +e
# The carrier comes up asynchronously; UCX ignores an interface that is not running yet.
for _ in $(seq 50); do
    if ip -n "$NSA" link show mpxv0 | grep -q LOWER_UP &&
        ip -n "$NSB" link show mpxv0 | grep -q LOWER_UP; then
        break
    fi
    sleep 0.1
done
if command -v ping >/dev/null 2>&1; then
    ip netns exec "$NSB" ping -c 1 -W 2 10.77.0.1 >/dev/null 2>&1 ||
        fail "10.77.0.1 does not answer from $NSB"
fi

# A boot id of its own for b (auto): the library compares boot ids to tell hosts apart.
if [ "$MODE" = auto ]; then
    cat /proc/sys/kernel/random/uuid >"$TMP/boot_id"
    if ! ip netns exec "$NSB" unshare --pid --fork --mount-proc sh -c \
        "mount --bind $TMP/boot_id /proc/sys/kernel/random/boot_id &&
         cmp -s $TMP/boot_id /proc/sys/kernel/random/boot_id" 2>"$TMP/err"; then
        skip "cannot give namespace b a PID namespace and a boot id of its own: $(cat "$TMP/err")"
    fi
fi

export UCX_TLS=tcp,self UCX_NET_DEVICES=mpxv0 MPIXFER_LINK_COPY=$MODE
# A silent peer is bounded by the stall timeout; keep it short so a failure here is quick.
export MPIXFER_STALL_TIMEOUT_MS=${MPIXFER_STALL_TIMEOUT_MS:-10000}
# Two phases of at most JOB_S + 5 s each stay within the CTest TIMEOUT (200 s), so the trap
# always runs and deletes the namespaces.
JOB_S=80
# unshare --fork: end the namespace's first process with unshare itself (timeout kills it).
KILL_CHILD=()
unshare --help 2>/dev/null | grep -q -- --kill-child && KILL_CHILD=(--kill-child)

# Run in b's new mount namespace (auto): $0 is the boot id file, "$@" the job.
# shellcheck disable=SC2016
BIND_BOOT_ID='mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"'

# job NS NAME ARGS...: one `mpiexec -n 1` job in namespace NS, output in $TMP/NAME.log.
job() {
    local ns=$1 name=$2 host
    shift 2
    if [ "$ns" = "$NSA" ]; then host=10.77.0.1; else host=10.77.0.2; fi
    if [ "$ns" = "$NSB" ] && [ "$MODE" = auto ]; then
        MPIXFER_LISTEN_HOST=$host timeout -k 5 "$JOB_S" ip netns exec "$ns" \
            unshare --pid --fork --mount-proc "${KILL_CHILD[@]}" sh -c "$BIND_BOOT_ID" "$TMP/boot_id" \
            "$MPIEXEC" -n 1 "${EXTRA[@]}" "$EXE" "$@" >"$TMP/$name.log" 2>&1
    else
        MPIXFER_LISTEN_HOST=$host timeout -k 5 "$JOB_S" ip netns exec "$ns" \
            "$MPIEXEC" -n 1 "${EXTRA[@]}" "$EXE" "$@" >"$TMP/$name.log" 2>&1
    fi
}
EXTRA=("$@")
show() { sed "s/^/  [$1] /" "$TMP/$1.log"; }
counter() { ip netns exec "$NSB" cat "/sys/class/net/mpxv0/statistics/$1"; }

echo "namespaces $NSA (10.77.0.1) and $NSB (10.77.0.2), veth mpxv0; MPIXFER_LINK_COPY=$MODE;" \
    "UCX_TLS=$UCX_TLS;" \
    "$("$MPIEXEC" --version 2>&1 | grep -m 1 -E "OpenRTE|Open MPI|Version:" | tr -s ' ')"

echo "== load by connection info and by blob, scattered WRITE/READ, sync messages"
D1=$TMP/rounds
mkdir "$D1"
job "$NSA" serve1 serve "$D1" a &
pid_a=$!
tx0=$(counter tx_bytes)
rx0=$(counter rx_bytes)
job "$NSB" client client "$D1"
rc_c=$?
tx1=$(counter tx_bytes)
rx1=$(counter rx_bytes)
wait "$pid_a"
rc_a=$?
show serve1
show client
[ $rc_c = 124 ] && fail "the client did not finish within $JOB_S s"
[ $rc_c = 0 ] || fail "client (exit $rc_c)"
[ $rc_a = 0 ] || fail "server a (exit $rc_a)"
grep -q "10.77.0.1" "$TMP/serve1.log" || fail "the server's connection info does not name 10.77.0.1"
read -r wb rb <"$D1/client.bytes" || fail "no client.bytes"
echo "veth mpxv0 of $NSB: tx $((tx1 - tx0)) bytes, rx $((rx1 - rx0)) bytes;" \
    "the client WRITE $wb and READ $rb bytes"
[ $((tx1 - tx0)) -ge "$wb" ] || fail "fewer bytes left $NSB on the veth than the client wrote"
[ $((rx1 - rx0)) -ge "$rb" ] || fail "fewer bytes reached $NSB on the veth than the client read"

echo "== a server killed mid-transfer"
D2=$TMP/kill
mkdir "$D2"
job "$NSA" serve_a serve "$D2" a &
pid_a=$!
job "$NSA" serve_b serve "$D2" b &
pid_b=$!
job "$NSB" victim victim "$D2" &
pid_v=$!
for _ in $(seq 600); do [ -e "$D2/victim.ready" ] && break; sleep 0.05; done
if [ ! -e "$D2/victim.ready" ]; then
    show victim
    fail "the victim never got ready"
fi
sleep 0.3
# The process of agent "a" itself (its pid from its info file), not its launcher: a crash.
srv=$(sed -n 4p "$D2/a.info")
if [ -z "$srv" ] || [ "$(cat "/proc/$srv/comm" 2>/dev/null)" != "test_link_netns" ]; then
    fail "cannot find the server process of a (pid '$srv')"
fi
kill -KILL "$srv"
wait "$pid_v"
rc_v=$?
wait "$pid_b"
rc_b=$?
wait "$pid_a" 2>/dev/null
show victim
show serve_b
[ $rc_v = 0 ] || fail "victim (exit $rc_v)"
[ $rc_b = 0 ] || fail "server b (exit $rc_b)"
grep -q "FAILURE\|submit refused" "$TMP/victim.log" || fail "no failed transfer reported"
echo "PASS test_link_netns ($MODE)"
