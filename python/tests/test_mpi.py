"""Under mpiexec -n 2: a Context over MPI.COMM_WORLD with bootstrap(), and two processes
whose agents live in their own process-wide contexts (MPI_COMM_SELF) and meet by
descriptor blobs and connection info exchanged through files: the link path."""
import os
import shutil
import tempfile
import time

import numpy as np
import pytest
from mpi4py import MPI

import mpixfer as tab

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
if comm.Get_size() != 2:
    pytest.skip("needs mpiexec -n 2", allow_module_level=True)
peer = 1 - rank
N = 1 << 18  # float32 elements: 1 MiB


def messages_from(agent, sender, want, timeout_s=20.0):
    """Collects `want` sync messages from `sender`, failing after `timeout_s`."""
    got = []
    end = time.monotonic() + timeout_s
    while len(got) < want:
        got += agent.get_notified_sync_messages().get(sender, [])
        assert time.monotonic() < end, f"{agent.name}: {len(got)}/{want} messages from {sender}"
        time.sleep(0.001)
    return got


def scattered(buf, blk, order):
    """Descriptors of `buf` cut in `blk`-byte blocks, taken in `order`."""
    addrs = buf.ctypes.data + np.asarray(order, dtype=np.int64) * blk
    return tab.MemoryDescs.from_arrays_uniform_device(
        tab.MemoryType.DRAM, addrs, np.full(len(order), blk, dtype=np.int64), 0)


def test_world_context_bootstrap_write_with_sync(names):
    with tab.Context(comm) as ctx:
        assert (ctx.rank, ctx.size) == (rank, 2)
        me = tab.MpixferTransferAgent(tab.BaseAgentConfig(names(f"r{rank}")), context=ctx)
        other = names(f"r{peer}")
        buf = np.full(N, -1.0, dtype=np.float32) if rank == 1 else \
            np.arange(N, dtype=np.float32)
        me.register_memory(buf)
        # The destination's address travels by MPI (the test's own, not the library's).
        remote_addr = comm.sendrecv(buf.ctypes.data, dest=peer, source=peer)
        ctx.bootstrap()
        if rank == 0:
            dst = tab.MemoryDescs(tab.MemoryType.DRAM, [(remote_addr, buf.nbytes, 0)])
            assert me.check_remote_descs(other, dst)
            st = me.submit_transfer_requests(tab.TransferRequest(
                tab.TransferOp.WRITE, tab.MemoryDescs.from_tensors(buf), dst, other,
                b"kv\x00done"))
            assert st.wait(20_000) == tab.TransferState.SUCCESS
        else:
            # The message comes only once the bytes are in place.
            assert messages_from(me, other, 1) == [b"kv\x00done"]
            assert np.array_equal(buf, np.arange(N, dtype=np.float32))
        comm.Barrier()
        me.deregister_memory(buf)
        me.close()
        comm.Barrier()
    assert ctx.closed


@pytest.fixture
def shared_dir():
    d = tempfile.mkdtemp(prefix="mpixfer-py-") if rank == 0 else None
    d = comm.bcast(d, root=0)
    yield d
    comm.Barrier()
    if rank == 0:
        shutil.rmtree(d, ignore_errors=True)


def wait_file(path, timeout_s=20.0):
    end = time.monotonic() + timeout_s
    while not os.path.exists(path):
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.005)
    with open(path, "rb") as f:
        return f.read()


def publish(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)  # whole or not at all


def wait_usable(agent, name, descs, timeout_s=20.0):
    end = time.monotonic() + timeout_s
    while not agent.check_remote_descs(name, descs):
        assert time.monotonic() < end, f"{name} never became usable"
        time.sleep(0.001)


def test_links_by_blob_and_connection_info(names, shared_dir):
    """Agents of the process-wide contexts (MPI_COMM_SELF): no communicator in common."""
    me = tab.MpixferTransferAgent(tab.BaseAgentConfig(names(f"r{rank}")))
    assert me.context.process_wide and me.context.size == 1
    other = names(f"r{peer}")
    blk, nblk = 16384, 256
    buf = np.zeros(blk * nblk, dtype=np.uint8)
    me.register_memory(buf)
    # Rank 1 publishes its descriptor blob and its pool's address; rank 0 its connection
    # info (the other way of meeting).
    if rank == 1:
        publish(os.path.join(shared_dir, "blob"), me.get_local_agent_desc().backend_agent_desc)
    else:
        publish(os.path.join(shared_dir, "info"), me.get_local_connection_info().encode())
    publish(os.path.join(shared_dir, f"addr{rank}"), str(buf.ctypes.data).encode())
    remote_addr = int(wait_file(os.path.join(shared_dir, f"addr{peer}")))
    order = np.random.default_rng(11).permutation(nblk)
    if rank == 0:
        me.load_remote_agent(other, tab.AgentDesc(wait_file(os.path.join(shared_dir, "blob"))))
        far = tab.MemoryDescs.from_arrays_uniform_device(
            tab.MemoryType.DRAM, remote_addr + order.astype(np.int64) * blk,
            np.full(nblk, blk, dtype=np.int64), 0)
        wait_usable(me, other, far)
        buf[:] = np.random.default_rng(5).integers(0, 256, buf.size, dtype=np.uint8)
        near = scattered(buf, blk, np.arange(nblk))
        st = me.submit_transfer_requests(
            tab.TransferRequest(tab.TransferOp.WRITE, near, far, other, b"written"))
        assert st.wait(20_000) == tab.TransferState.SUCCESS
        # Rank 1 inverts its pool and says so; READ it back, block by block in the same
        # scattered order.
        assert messages_from(me, other, 1) == [b"inverted"]
        got = np.zeros_like(buf)
        me.register_memory(got)
        st = me.submit_transfer_requests(tab.TransferRequest(
            tab.TransferOp.READ, scattered(got, blk, np.arange(nblk)), far, other))
        assert st.wait(20_000) == tab.TransferState.SUCCESS
        assert np.array_equal(got, 255 - buf)
        me.deregister_memory(got)
        s = me.context.stats()
        assert s["link_copies"] + s["link_ops"] > 0, s
        me.notify_sync_message(other, b"bye\x00")
    else:
        me.load_remote_agent_by_connection(
            other, wait_file(os.path.join(shared_dir, "info")).decode())
        assert messages_from(me, other, 1) == [b"written"]
        want = np.random.default_rng(5).integers(0, 256, buf.size, dtype=np.uint8)
        # Block i of rank 0's buffer went to block order[i] here.
        assert np.array_equal(buf.reshape(nblk, blk)[order], want.reshape(nblk, blk))
        buf.reshape(nblk, blk)[order] = 255 - want.reshape(nblk, blk)
        # Loaded by connection info: usable once the call returns, notify straight away.
        me.notify_sync_message(other, b"inverted")
        assert messages_from(me, other, 1) == [b"bye\x00"]
    comm.Barrier()
    me.invalidate_remote_agent(other)
    comm.Barrier()
    me.close()
