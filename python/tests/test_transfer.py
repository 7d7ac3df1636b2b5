"""Transfers between two agents of this process (the library copies directly)."""
import numpy as np
import pytest
from mpi4py import MPI

import mpixfer as tab

torch = pytest.importorskip("torch")


def pair(names, **kw):
    """Two agents that know each other, registered with nothing yet."""
    a = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("a"), **kw))
    b = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("b"), **kw))
    return a, b


def exchange(a, b):
    a.load_remote_agent(b.name, b.get_local_agent_desc())
    b.load_remote_agent(a.name, a.get_local_agent_desc())


def descs(obj):
    return tab.MemoryDescs.from_tensors(obj)


@pytest.mark.parametrize("prog_thread", [True, False])
def test_numpy_write_and_read(names, prog_thread):
    a, b = pair(names, use_prog_thread=prog_thread)
    src = np.arange(100_000, dtype=np.float64)
    dst = np.zeros_like(src)
    a.register_memory(descs(src))
    b.register_memory(descs(dst))
    exchange(a, b)
    assert a.check_remote_descs(b.name, descs(dst))
    st = a.submit_transfer_requests(
        tab.TransferRequest(tab.TransferOp.WRITE, descs(src), descs(dst), b.name, b"w\x00"))
    assert st.wait() == tab.TransferState.SUCCESS and st.is_completed()
    assert np.array_equal(src, dst)
    assert b.get_notified_sync_messages() == {a.name: [b"w\x00"]}
    assert b.get_notified_sync_messages() == {}

    # READ: remote dst -> local src.
    dst[:] = -np.arange(dst.size)
    st = a.submit_transfer_requests(
        tab.TransferRequest(tab.TransferOp.READ, descs(src), descs(dst), b.name))
    assert st.wait(5000) == tab.TransferState.SUCCESS
    assert np.array_equal(src, -np.arange(src.size, dtype=np.float64))
    assert b.get_notified_sync_messages() == {}
    a.deregister_memory(descs(src))
    b.deregister_memory(descs(dst))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.uint8])
def test_torch_cpu_write_and_read(names, dtype):
    a, b = pair(names)
    src = (torch.arange(1 << 16) % 251).to(dtype)
    dst = torch.zeros_like(src)
    # TensorRT-LLM's way: one MemoryDesc from data_ptr.
    sd = tab.MemoryDescs(tab.MemoryType.DRAM,
                         [tab.MemoryDesc(src.data_ptr(), src.numel() * src.element_size(), 0)])
    dd = tab.MemoryDescs(tab.MemoryType.DRAM,
                         [tab.MemoryDesc(dst.data_ptr(), dst.numel() * dst.element_size(), 0)])
    a.register_memory(sd)
    b.register_memory(dd)
    exchange(a, b)
    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.WRITE, sd, dd, b.name))
    assert st.wait(timeout_ms=5000) == tab.TransferState.SUCCESS
    assert torch.equal(src, dst)
    src.zero_()
    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.READ, sd, dd, b.name))
    assert st.wait(timeout_ms=5000) == tab.TransferState.SUCCESS
    assert torch.equal(src, dst)
    assert int(src[300]) == 300 % 251


def test_many_tensors_one_call(names):
    a, b = pair(names)
    srcs = [torch.full((1000 + i,), float(i)) for i in range(8)]
    dsts = [torch.zeros(1000 + i) for i in range(8)]
    sd, dd = descs(srcs), descs(dsts)
    assert len(sd) == 8 and sd.type == tab.MemoryType.DRAM
    assert sd.descs[3].addr == srcs[3].data_ptr() and sd.descs[3].len == 1003 * 4
    a.register_memory(srcs)  # register_memory takes tensors directly too
    b.register_memory(dsts)
    exchange(a, b)
    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.WRITE, sd, dd, b.name))
    assert st.wait() == tab.TransferState.SUCCESS
    for s, d in zip(srcs, dsts):
        assert torch.equal(s, d)
    with pytest.raises(ValueError):
        descs(torch.zeros(4, 4).t())  # not contiguous


def test_wait_zero_on_ten_million(names):
    a, b = pair(names)
    src = np.random.default_rng(1).random(10_000_000, dtype=np.float32)
    dst = np.zeros_like(src)
    a.register_memory(src)
    b.register_memory(dst)
    exchange(a, b)
    st = a.submit_transfer_requests(
        tab.TransferRequest(tab.TransferOp.WRITE, descs(src), descs(dst), b.name))
    assert st.wait(timeout_ms=0) in (tab.TransferState.IN_PROGRESS, tab.TransferState.SUCCESS)
    assert st.wait(timeout_ms=5000) == tab.TransferState.SUCCESS
    assert np.array_equal(src, dst)


def test_invalidate_then_submit(names):
    a, b = pair(names)
    src, dst = np.ones(1024, np.uint8), np.zeros(1024, np.uint8)
    a.register_memory(src)
    b.register_memory(dst)
    exchange(a, b)
    req = tab.TransferRequest(tab.TransferOp.WRITE, descs(src), descs(dst), b.name)
    assert a.submit_transfer_requests(req).wait() == tab.TransferState.SUCCESS
    a.invalidate_remote_agent(b.name)
    assert not a.check_remote_descs(b.name, descs(dst))
    try:
        st = a.submit_transfer_requests(req)
    except tab.MpixferError as e:
        assert e.status_name == "MPIXFER_ERR_NOT_FOUND"
    else:
        assert st.wait(5000) == tab.TransferState.FAILURE
    with pytest.raises(tab.MpixferError):
        a.invalidate_remote_agent(b.name)


def test_forty_thousand_descriptors(names):
    n, blk = 40_000, 256
    a, b = pair(names)
    src = np.random.default_rng(2).integers(0, 255, n * blk, dtype=np.uint8)
    dst = np.zeros_like(src)
    a.register_memory(src)
    b.register_memory(dst)
    exchange(a, b)
    # Scattered: block i of src goes to block perm[i] of dst.
    perm = np.random.default_rng(3).permutation(n).astype(np.int64)
    base_s, base_d = src.ctypes.data, dst.ctypes.data
    sizes = np.full(n, blk, dtype=np.int64)
    sd = tab.MemoryDescs.from_arrays_uniform_device(
        tab.MemoryType.DRAM, base_s + np.arange(n, dtype=np.int64) * blk, sizes, 0)
    dd = tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, base_d + perm * blk, sizes,
                                     np.zeros(n, dtype=np.int32))
    assert len(sd) == len(dd) == n
    st = a.submit_transfer_requests(
        tab.TransferRequest(tab.TransferOp.WRITE, sd, dd, b.name, "done 40000"))
    assert st.wait(30_000) == tab.TransferState.SUCCESS
    assert np.array_equal(dst.reshape(n, blk)[perm], src.reshape(n, blk))
    assert b.get_notified_sync_messages() == {a.name: [b"done 40000"]}


def test_errors_carry_status_names(names):
    a, b = pair(names)
    src, dst = np.ones(64, np.uint8), np.zeros(64, np.uint8)
    a.register_memory(src)
    with pytest.raises(tab.MpixferError) as e:
        a.register_memory(src)
    assert e.value.status_name == "MPIXFER_ERR_EXISTS" and e.value.status == -7
    b.register_memory(dst)
    exchange(a, b)
    # Outside what b registered.
    big = tab.MemoryDescs(tab.MemoryType.DRAM, [(dst.ctypes.data, 128, 0)])
    with pytest.raises(tab.MpixferError) as e:
        a.submit_transfer_requests(tab.TransferRequest(
            tab.TransferOp.WRITE, tab.MemoryDescs(tab.MemoryType.DRAM,
                                                  [(src.ctypes.data, 128, 0)]), big, b.name))
    assert e.value.status_name.startswith("MPIXFER_ERR_")
    with pytest.raises(tab.MpixferError) as e:
        a.load_remote_agent("someone", b.get_local_agent_desc())
    assert e.value.status_name == "MPIXFER_ERR_INVALID_ARG"
    with pytest.raises(tab.MpixferError) as e:
        a.load_remote_agent(b.name, tab.AgentDesc(b"garbage"))
    assert e.value.status_name == "MPIXFER_ERR_BAD_DESC"


def test_notify_binary_safe_and_grouped(names):
    a, b = pair(names)
    c = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("c")))
    for x in (a, c):
        x.load_remote_agent(b.name, b.get_local_agent_desc())
    msgs = [b"", bytes(range(256)), b"\x00\x00", "text"]
    for m in msgs:
        a.notify_sync_message(b.name, m)
    c.notify_sync_message(b.name, b"from c")
    got = b.get_notified_sync_messages()
    assert got == {a.name: [b"", bytes(range(256)), b"\x00\x00", b"text"], c.name: [b"from c"]}
    assert all(isinstance(v, bytes) for vs in got.values() for v in vs)


def test_connection_info_in_process(names):
    a, b = pair(names)
    dst = np.zeros(4096, np.uint8)
    b.register_memory(dst)
    info = b.get_local_connection_info()
    assert isinstance(info, str) and info.startswith("mpixfer:")
    a.load_remote_agent_by_connection(b.name, info)
    for _ in range(10_000):
        if a.check_remote_descs(b.name, descs(dst)):
            break
    assert a.check_remote_descs(b.name, descs(dst))


def test_empty_request_sends_its_message(names):
    a, b = pair(names)
    exchange(a, b)
    empty = tab.MemoryDescs(tab.MemoryType.DRAM, [])
    st = a.submit_transfer_requests(
        tab.TransferRequest(tab.TransferOp.WRITE, empty, empty, b.name, b"nothing"))
    assert st.wait() == tab.TransferState.SUCCESS and st.is_completed()
    assert b.get_notified_sync_messages() == {a.name: [b"nothing"]}


def test_context_comm_self_arena_and_stats(names):
    with tab.Context(MPI.COMM_SELF, arena_size=1 << 20) as ctx:
        assert ctx.size == 1 and not ctx.process_wide
        a = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("a")), context=ctx)
        b = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("b")), context=ctx)
        assert a.context.world_id == ctx.world_id
        buf = ctx.mem_alloc(1 << 16)
        view = np.frombuffer(buf, dtype=np.uint32)
        assert view.ctypes.data == buf.addr and len(buf) == 1 << 16
        src = np.arange(view.size, dtype=np.uint32)
        a.register_memory(src)
        b.register_memory(buf.descs())
        exchange(a, b)
        st = a.submit_transfer_requests(
            tab.TransferRequest(tab.TransferOp.WRITE, descs(src), buf.descs(), b.name))
        assert st.wait() == tab.TransferState.SUCCESS
        assert np.array_equal(view, src)
        s = ctx.stats()
        assert s["requests"] == 1 and s["bytes"] == src.nbytes
        with pytest.raises(tab.MpixferError) as e:
            ctx.close()  # the arena buffer is still alive
        assert e.value.status_name == "MPIXFER_ERR_BUSY"
        b.deregister_memory(buf.descs())
        del view, buf
        a.close()
        b.close()
    assert ctx.closed
    with pytest.raises(tab.MpixferError):
        tab.MpixferTransferAgent(tab.BaseAgentConfig(names("c")), context=ctx)


def test_context_rejects_non_comm():
    with pytest.raises(TypeError):
        tab.Context(42)


def test_cancel_and_deadline(names):
    """A 40,000-descriptor request is issued by progress, not by submit: cancelled (or past
    its deadline) before any progress, none of its bytes moves and no sync message leaves.
    A context of its own: no other test's progress thread drives it meanwhile."""
    ctx = tab.Context(MPI.COMM_SELF)
    a = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("a"), use_prog_thread=False),
                                 context=ctx)
    b = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("b"), use_prog_thread=False),
                                 context=ctx)
    n, blk = 40_000, 64
    src = np.arange(n * blk, dtype=np.uint8).reshape(n, blk) | 1
    dst = np.zeros_like(src)
    a.register_memory(descs(src))
    b.register_memory(descs(dst))
    exchange(a, b)
    addrs = lambda arr: arr.ctypes.data + np.arange(n, dtype=np.int64)[::-1] * blk  # noqa: E731
    sizes = np.full(n, blk, dtype=np.int64)
    devs = np.zeros(n, dtype=np.int32)
    s = tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, addrs(src), sizes, devs)
    d = tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, addrs(dst), sizes, devs)

    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.WRITE, s, d, b.name, b"x"))
    assert st.cancel() is True
    assert st.wait(0) == tab.TransferState.FAILURE
    assert st.get_last_status_str() == "MPIXFER_ERR_CANCELED"
    assert not dst.any()
    assert st.cancel() is True  # ended: result kept
    assert st.get_last_status_str() == "MPIXFER_ERR_CANCELED"

    req = tab.TransferRequest(tab.TransferOp.WRITE, s, d, b.name, b"y", deadline_ms=1)
    assert req.deadline_ms == 1
    st = a.submit_transfer_requests(req)
    import time
    time.sleep(0.01)
    assert st.wait() == tab.TransferState.FAILURE
    assert st.get_last_status_str() == "MPIXFER_ERR_TIMEOUT"
    assert not dst.any()
    assert b.get_notified_sync_messages() == {}

    # Without cancel the same request moves every byte.
    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.WRITE, s, d, b.name, b"z"))
    assert st.wait() == tab.TransferState.SUCCESS
    assert np.array_equal(src, dst)
    assert b.get_notified_sync_messages() == {a.name: [b"z"]}
