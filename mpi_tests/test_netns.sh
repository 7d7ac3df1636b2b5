#!/bin/sh
# Two "hosts" on one machine: network namespaces joined by a veth pair, a 2-rank Open MPI
# job across them over TCP (test_netns.c holds the checks).
#
#   test_netns.sh <mpiexec> <test_netns binary> on|off [extra mpiexec flags...]
#
# Namespaces mpx<pid>a and mpx<pid>b each get one end of a veth pair, renamed to mpxv0 in
# both, with 10.77.0.1/24 and 10.77.0.2/24: the addresses exist only inside them, so the
# job cannot take any other path. mpirun runs in namespace a; Open MPI's rsh launcher
# starts the daemon for host 10.77.0.2 through an agent script that runs it with
# `ip netns exec mpx<pid>b`. Both namespaces are deleted on exit.
#
# Open MPI 4.1 over plain TCP: osc/rdma cannot create a window over btl/tcp, and osc/pt2pt
# refuses MPI_THREAD_MULTIPLE, so the job uses UCX over TCP for both the pml and the osc:
#   --mca pml ucx --mca osc ucx --mca pml_ucx_tls any --mca pml_ucx_devices any
#   --mca pml_ucx_progress_iterations 1 -x UCX_TLS=tcp,self -x UCX_NET_DEVICES=mpxv0
# (the *_tls/_devices overrides: Open MPI's UCX components accept only InfiniBand devices by
# default; progress_iterations 1: MPI_Improbe otherwise progresses osc/ucx only every 100th
# call, and the RMA of a target that only polls for messages crawls).
#
# Exit 77 (skip) when this is not Open MPI with osc/ucx, or namespaces cannot be created
# (not root, no iproute2, no CAP_NET_ADMIN).
set -u

MPIEXEC=$1
EXE=$2
MODE=$3
shift 3

skip() {
    echo "SKIP: $*"
    exit 77
}

if [ "${MPIXFER_TEST_TSAN:-0}" = 1 ]; then
    # Seen with Debian 12's Open MPI 4.1.4 + UCX 1.13: a TSan-built "MPI_Init, MPI_Barrier,
    # MPI_Finalize" program run with --mca pml ucx dies with SIGSEGV, mpixfer or not.
    skip "ThreadSanitizer builds crash inside Open MPI's UCX pml, which this test needs"
fi
if ! "$MPIEXEC" --version 2>/dev/null | grep -qi -e "open mpi" -e "openrte"; then
    skip "test_netns needs Open MPI (its rsh launcher starts the daemons in the namespaces)"
fi
if ! ompi_info 2>/dev/null | grep -q "MCA osc: ucx"; then
    skip "Open MPI has no osc/ucx component (needed for RMA windows over TCP)"
fi
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "no 'ip' command (iproute2)"

NSA=mpx$$a
NSB=mpx$$b
TMP=$(mktemp -d /tmp/mpixfer-netns.XXXXXX) || exit 1

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
if ! ip link add "mxv$$a" netns "$NSA" type veth peer name "mxv$$b" netns "$NSB" \
        2>"$TMP/err"; then
    skip "cannot create a veth pair: $(cat "$TMP/err")"
fi
set -e
ip -n "$NSA" link set "mxv$$a" name mpxv0
ip -n "$NSB" link set "mxv$$b" name mpxv0
ip -n "$NSA" addr add 10.77.0.1/24 dev mpxv0
ip -n "$NSB" addr add 10.77.0.2/24 dev mpxv0
for ns in "$NSA" "$NSB"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set mpxv0 up
done
set +e
# The carrier comes up asynchronously; UCX ignores an interface that is not running yet.
for i in $(seq 50); do
    if ip -n "$NSA" link show mpxv0 | grep -q LOWER_UP &&
        ip -n "$NSB" link show mpxv0 | grep -q LOWER_UP; then
        break
    fi
    sleep 0.1
done

# The rsh agent: "<agent> [options] <host> <command...>"; the host names a namespace.
cat >"$TMP/agent.sh" <<EOF
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host=\$1
shift
case "\$host" in
10.77.0.1) ns=$NSA ;;
10.77.0.2) ns=$NSB ;;
*) echo "netns agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
EOF
chmod +x "$TMP/agent.sh"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' >"$TMP/hosts"

# MPIXFER_DATA_PATH=rma (one variant of the test) travels to both ranks.
path_flags=""
[ -n "${MPIXFER_DATA_PATH:-}" ] && path_flags="-x MPIXFER_DATA_PATH"
echo "namespaces $NSA (10.77.0.1) and $NSB (10.77.0.2), veth mpxv0; progress thread $MODE;" \
    "data path ${MPIXFER_DATA_PATH:-auto}"
timeout -k 5 90 ip netns exec "$NSA" "$MPIEXEC" -n 2 --hostfile "$TMP/hosts" "$@" \
    --mca plm_rsh_agent "$TMP/agent.sh" \
    --mca oob_tcp_if_include 10.77.0.0/24 \
    --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 \
    --mca pml ucx --mca osc ucx \
    --mca pml_ucx_tls any --mca pml_ucx_devices any --mca pml_ucx_progress_iterations 1 \
    -x UCX_TLS=tcp,self -x UCX_NET_DEVICES=mpxv0 \
    -x MPIXFER_LOG -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM $path_flags \
    "$EXE" "$MODE"
rc=$?
[ $rc = 124 ] && echo "test_netns: the job did not finish within 90 s"
exit $rc
