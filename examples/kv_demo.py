#!/usr/bin/python3
"""kv_demo.py: disaggregated prefill/decode in miniature, from Python with PyTorch tensors.

Prefill owns a KV pool of computed blocks, a tensor [layers, 2 (K, V), blocks, block_bytes];
decode owns an empty one of the same shape. Decode asks for N block ids with a sync message;
prefill answers with ONE WRITE request of layers x N x {K,V} descriptors (built from NumPy
address arrays, no Python loop per block) carrying the sync message "done N", which arrives
only once the bytes are in place. Decode checks every byte and says "ok" or "bad".

    mpiexec -n 1 python3 kv_demo.py            both agents in one process
    mpiexec -n 2 python3 kv_demo.py            a Context over COMM_WORLD, bootstrap()
    python3 kv_demo.py --serve DIR &           two separately launched processes (each its
    python3 kv_demo.py --connect DIR           own MPI world) over a link: prefill writes
                                               DIR/prefill.info, decode loads it

Options: --layers 4 --blocks 64 --block-tokens 16 --heads 8 --head-dim 128 --request 16
--seed 42 --timeout 60. Exit 0 only when decode saw every byte right.
"""
import argparse
import os
import sys
import threading
import time

import numpy as np
import torch
from mpi4py import MPI

import mpixfer as tab

PREFILL, DECODE = "prefill", "decode"


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("layers", 4), ("blocks", 64), ("block-tokens", 16), ("heads", 8),
                          ("head-dim", 128), ("request", 16), ("seed", 42), ("timeout", 60)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--serve", metavar="DIR", help="two-job mode: be prefill")
    p.add_argument("--connect", metavar="DIR", help="two-job mode: be decode")
    a = p.parse_args()
    if min(a.layers, a.blocks, a.block_tokens, a.heads, a.head_dim, a.request) <= 0:
        p.error("sizes must be positive")
    if a.request > a.blocks:
        p.error("--request must be <= --blocks")
    return a


def make_pool(a, fill):
    """[layers, 2, blocks, elems] float16; prefill's holds seeded random bits (compared as
    int16, so NaN patterns compare equal), decode's holds -1."""
    elems = a.block_tokens * a.heads * a.head_dim
    shape = (a.layers, 2, a.blocks, elems)
    if fill:
        g = torch.Generator().manual_seed(a.seed)
        return torch.randint(-32768, 32767, shape, dtype=torch.int16, generator=g).view(
            torch.float16)
    return torch.full(shape, -1, dtype=torch.int16).view(torch.float16)


def block_descs(pool, ids):
    """Descriptors of blocks `ids` of every layer and of K and V: layers x 2 x len(ids)."""
    layers, kv, blocks, elems = pool.shape
    blk = elems * pool.element_size()
    ids = np.asarray(ids, dtype=np.int64)
    rows = np.arange(layers * kv, dtype=np.int64)[:, None] * blocks
    addrs = pool.data_ptr() + ((rows + ids[None, :]) * blk).ravel()
    return tab.MemoryDescs.from_arrays_uniform_device(
        tab.MemoryType.DRAM, addrs, np.full(addrs.size, blk, dtype=np.int64), 0)


def wait_message(agent, sender, timeout_s):
    end = time.monotonic() + timeout_s
    while True:
        msgs = agent.get_notified_sync_messages().get(sender)
        if msgs:
            return msgs[0].decode()
        if time.monotonic() > end:
            raise TimeoutError(f"{agent.name}: no message from {sender} in {timeout_s} s")
        time.sleep(0.0005)


def wait_usable(agent, name, descs, timeout_s):
    end = time.monotonic() + timeout_s
    while not agent.check_remote_descs(name, descs):
        if time.monotonic() > end:
            raise TimeoutError(f"{agent.name}: {name} not usable in {timeout_s} s")
        time.sleep(0.0005)


def prefill(a, agent, pool):
    """Serves one request; returns True when decode said "ok"."""
    req = wait_message(agent, DECODE, a.timeout)
    fields = dict(f.split("=", 1) for f in req.split())
    ids = [int(i) for i in fields["want"].split(",")]
    if "conn" in fields:  # two jobs: decode is reached by its connection info
        agent.load_remote_agent_by_connection(DECODE, fields["conn"])
    t0 = time.perf_counter()
    src = block_descs(pool, ids)
    # Decode's pool: the same shape, so the same layout from its base address.
    base = int(fields["addr"])
    dst_addrs = np.asarray(src.addrs(), dtype=np.int64) - pool.data_ptr() + base
    dst = tab.MemoryDescs.from_arrays_uniform_device(
        tab.MemoryType.DRAM, dst_addrs, np.asarray(src.sizes(), dtype=np.int64), 0)
    t_build = time.perf_counter() - t0
    wait_usable(agent, DECODE, dst, a.timeout)
    t0 = time.perf_counter()
    st = agent.submit_transfer_requests(
        tab.TransferRequest(tab.TransferOp.WRITE, src, dst, DECODE, f"done {len(ids)}".encode()))
    state = st.wait(a.timeout * 1000)
    dt = time.perf_counter() - t0
    if state != tab.TransferState.SUCCESS:
        print(f"prefill: WRITE ended {state}: {st.get_last_status_str()}", file=sys.stderr)
        return False
    print(f"prefill: {len(src)} descriptors ({src.total_bytes / 2**20:.1f} MiB) built in "
          f"{t_build * 1e3:.2f} ms, written in {dt * 1e3:.2f} ms: "
          f"{src.total_bytes / dt / 1e9:.2f} GB/s")
    verdict = wait_message(agent, DECODE, a.timeout)
    print(f"prefill: decode says {verdict!r}")
    return verdict == "ok"


def decode(a, agent, pool, conn=None):
    rng = np.random.default_rng(a.seed)
    ids = sorted(rng.choice(a.blocks, size=a.request, replace=False).tolist())
    msg = f"want={','.join(map(str, ids))} addr={pool.data_ptr()}"
    if conn:
        msg += f" conn={conn}"
    t0 = time.perf_counter()
    agent.notify_sync_message(PREFILL, msg.encode())
    done = wait_message(agent, PREFILL, a.timeout)
    dt = time.perf_counter() - t0
    want = make_pool(a, True).view(torch.int16)
    got = pool.view(torch.int16)
    ok = done == f"done {len(ids)}" and torch.equal(got[:, :, ids], want[:, :, ids])
    # Blocks not asked for stay untouched.
    rest = [b for b in range(a.blocks) if b not in set(ids)]
    ok = ok and bool((got[:, :, rest] == -1).all())
    agent.notify_sync_message(PREFILL, b"ok" if ok else b"bad")
    nbytes = len(ids) * a.layers * 2 * pool.shape[3] * pool.element_size()
    print(f"decode: {len(ids)} blocks x {a.layers} layers x K,V ({nbytes / 2**20:.1f} MiB) "
          f"{'verified' if ok else 'WRONG'}; request to 'done' {dt * 1e3:.2f} ms")
    return ok


def main():
    a = parse()
    cfg = lambda name: tab.BaseAgentConfig(name, use_listen_thread=True)  # noqa: E731
    comm = MPI.COMM_WORLD
    if a.serve or a.connect:
        role = PREFILL if a.serve else DECODE
        d = a.serve or a.connect
        pool = make_pool(a, role == PREFILL)
        with tab.MpixferTransferAgent(cfg(role)) as agent:
            agent.register_memory(tab.MemoryDescs.from_tensors(pool))
            info = os.path.join(d, "prefill.info")
            if role == PREFILL:
                with open(info + ".tmp", "w") as f:
                    f.write(agent.get_local_connection_info())
                os.rename(info + ".tmp", info)
                ok = prefill(a, agent, pool)
                agent.invalidate_remote_agent(DECODE)
            else:
                end = time.monotonic() + a.timeout
                while not os.path.exists(info):
                    if time.monotonic() > end:
                        raise TimeoutError(f"{info} never appeared")
                    time.sleep(0.01)
                with open(info) as f:
                    agent.load_remote_agent_by_connection(PREFILL, f.read())
                ok = decode(a, agent, pool, agent.get_local_connection_info())
                # Prefill closes its link to us after the verdict; give it that moment.
                time.sleep(0.2)
        return 0 if ok else 1
    if comm.Get_size() == 1:
        pre_pool, dec_pool = make_pool(a, True), make_pool(a, False)
        with tab.MpixferTransferAgent(cfg(PREFILL)) as p, \
                tab.MpixferTransferAgent(cfg(DECODE)) as d:
            p.register_memory(tab.MemoryDescs.from_tensors(pre_pool))
            d.register_memory(tab.MemoryDescs.from_tensors(dec_pool))
            p.load_remote_agent(DECODE, d.get_local_agent_desc())
            d.load_remote_agent(PREFILL, p.get_local_agent_desc())
            # Decode on a thread of its own; prefill serves on this one.
            res = {}
            t = threading.Thread(target=lambda: res.setdefault("d", decode(a, d, dec_pool)))
            t.start()
            ok = prefill(a, p, pre_pool)
            t.join()
            return 0 if ok and res.get("d") else 1
    if comm.Get_size() != 2:
        print("kv_demo.py: run with 1 or 2 processes", file=sys.stderr)
        return 2
    rank = comm.Get_rank()
    role = PREFILL if rank == 0 else DECODE
    pool = make_pool(a, role == PREFILL)
    with tab.Context(comm) as ctx:
        agent = tab.MpixferTransferAgent(cfg(role), context=ctx)
        agent.register_memory(tab.MemoryDescs.from_tensors(pool))
        ctx.bootstrap()
        ok = prefill(a, agent, pool) if role == PREFILL else decode(a, agent, pool)
        ok = comm.allreduce(int(ok), op=MPI.MIN) == 1
        agent.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
