"""The binding's objects: TensorRT-LLM's binding cases, and what mpixfer adds to them."""
import numpy as np
import pytest

import mpixfer as tab


def test_memory_type_enum_distinct():
    values = [tab.MemoryType.DRAM, tab.MemoryType.VRAM, tab.MemoryType.BLK,
              tab.MemoryType.OBJ, tab.MemoryType.FILE]
    assert all(v is not None for v in values)
    assert len(set(int(v) for v in values)) == 5
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            assert a != b


def test_transfer_op_enum_distinct():
    assert tab.TransferOp.READ is not None and tab.TransferOp.WRITE is not None
    assert tab.TransferOp.READ != tab.TransferOp.WRITE


def test_transfer_state_enum_distinct():
    s = tab.TransferState
    assert s.IN_PROGRESS != s.SUCCESS
    assert s.SUCCESS != s.FAILURE
    assert s.IN_PROGRESS != s.FAILURE


@pytest.mark.parametrize("addr,length,dev", [(0x1000, 4096, 0), (0x0, 1, 0),
                                             (0xFFFFFFFF, 65536, 1), (0x12345678, 1024, 7),
                                             (2**64 - 4096, 4096, 2**32 - 1)])
def test_memory_desc_attributes(addr, length, dev):
    d = tab.MemoryDesc(addr, length, dev)
    assert (d.addr, d.len, d.device_id) == (addr, length, dev)


def test_memory_desc_read_only():
    d = tab.MemoryDesc(0x1000, 4096, 0)
    for attr in ("addr", "len", "device_id"):
        with pytest.raises(AttributeError):
            setattr(d, attr, 1)


def test_memory_desc_rejects_negative():
    with pytest.raises(ValueError):
        tab.MemoryDesc(-1, 10, 0)
    with pytest.raises(ValueError):
        tab.MemoryDesc(0, 10, 2**32)


def test_memory_descs_from_descs_and_tuples():
    d1, d2 = tab.MemoryDesc(0x1000, 4096, 0), tab.MemoryDesc(0x2000, 8192, 0)
    descs = tab.MemoryDescs(tab.MemoryType.VRAM, [d1, d2])
    assert descs.type == tab.MemoryType.VRAM
    assert len(descs.descs) == 2 and len(descs) == 2
    assert descs.descs[0].addr == 0x1000 and descs.descs[1].len == 8192
    t = tab.MemoryDescs(tab.MemoryType.DRAM, [(0x1000, 4096, 0), (0x2000, 8192, 3)])
    assert t.type == tab.MemoryType.DRAM
    assert [(d.addr, d.len, d.device_id) for d in t.descs] == [(0x1000, 4096, 0),
                                                               (0x2000, 8192, 3)]
    mixed = tab.MemoryDescs(tab.MemoryType.DRAM, [d1, (0x2000, 8192, 0)])
    assert mixed.descs[0] == d1 and mixed.descs[1] == d2


def test_memory_descs_empty():
    descs = tab.MemoryDescs(tab.MemoryType.DRAM, [])
    assert descs.type == tab.MemoryType.DRAM and len(descs.descs) == 0


def test_memory_descs_bad_items():
    with pytest.raises((TypeError, ValueError)):
        tab.MemoryDescs(tab.MemoryType.DRAM, [(1, 2)])
    with pytest.raises(TypeError):
        tab.MemoryDescs(tab.MemoryType.DRAM, [42])


def test_from_arrays():
    addrs = np.array([0x1000, 0x2000, 2**63 + 8], dtype=np.uint64).view(np.int64)
    sizes = np.array([16, 32, 64], dtype=np.int64)
    devs = np.array([0, 1, 2], dtype=np.int32)
    d = tab.MemoryDescs.from_arrays(tab.MemoryType.VRAM, addrs, sizes, devs)
    assert d.type == tab.MemoryType.VRAM
    assert [(x.addr, x.len, x.device_id) for x in d.descs] == [
        (0x1000, 16, 0), (0x2000, 32, 1), (2**63 + 8, 64, 2)]
    u = tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM, addrs, sizes, 5)
    assert [x.device_id for x in u.descs] == [5, 5, 5]
    assert list(u.addrs().view(np.uint64)) == [0x1000, 0x2000, 2**63 + 8]
    assert list(u.sizes()) == [16, 32, 64]


def test_from_arrays_read_only():
    addrs = np.arange(0x1000, 0x1000 + 40000 * 64, 64, dtype=np.int64)
    sizes = np.full(40000, 64, dtype=np.int64)
    devs = np.zeros(40000, dtype=np.int32)
    for a in (addrs, sizes, devs):
        a.flags.writeable = False
    d = tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, addrs, sizes, devs)
    assert len(d) == 40000 and d.total_bytes == 40000 * 64
    assert d.descs[39999].addr == 0x1000 + 39999 * 64
    u = tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM, addrs, sizes, 0)
    assert len(u) == 40000
    assert not addrs.flags.writeable  # untouched


def test_from_arrays_errors():
    a = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError):
        tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, a, np.zeros(2, np.int64),
                                    np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM, a,
                                                   np.array([1, -1, 1], np.int64), 0)
    with pytest.raises(ValueError):
        tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM,
                                                   np.zeros((2, 2), np.int64),
                                                   np.zeros((2, 2), np.int64), 0)
    # Floats are not addresses, sizes or device ids: refused, not converted.
    f = np.array([4096.0, 8192.0, 12288.0])
    with pytest.raises(TypeError, match="addrs must be an integer array"):
        tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM, f, a, 0)
    with pytest.raises(TypeError, match="sizes must be an integer array"):
        tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, a, f, np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="device_ids must be an integer array"):
        tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, a, a, f)
    with pytest.raises(ValueError, match="index 1"):
        tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, a, a,
                                    np.array([0, 2**32, 0], np.int64))


@pytest.mark.parametrize("dev", [2**32, -1, "0"])
def test_device_id_range(dev):
    # One rule and one message for MemoryDesc and for the tuples of MemoryDescs.
    with pytest.raises(ValueError, match=r"device_id must be an integer in \[0, 2\*\*32\)"):
        tab.MemoryDesc(0x1000, 8, dev)
    with pytest.raises(ValueError, match=r"device_id must be an integer in \[0, 2\*\*32\)"):
        tab.MemoryDescs(tab.MemoryType.DRAM, [(0x1000, 8, dev)])
    assert tab.MemoryDesc(0x1000, 8, 2**32 - 1).device_id == 2**32 - 1


def test_from_arrays_integer_kinds():
    # uint64 addresses above 2**63 as they are, int32 sizes, int64 device ids.
    addrs = np.array([0x1000, 2**63 + 8], dtype=np.uint64)
    d = tab.MemoryDescs.from_arrays(tab.MemoryType.DRAM, addrs, np.array([16, 32], np.int32),
                                    np.array([0, 2**32 - 1], np.int64))
    assert [(x.addr, x.len, x.device_id) for x in d.descs] == [
        (0x1000, 16, 0), (2**63 + 8, 32, 2**32 - 1)]
    # Python lists of ints are integer arrays too.
    u = tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM, [0x1000], [8], 1)
    assert [(x.addr, x.len, x.device_id) for x in u.descs] == [(0x1000, 8, 1)]


@pytest.mark.parametrize("blob", [b"", "text", "t\u00e9xt \u2603", bytes(range(256)),
                                  b"test_binary_data\x00\x01\x02"])
def test_agent_desc_round_trip(blob):
    d = tab.AgentDesc(blob)
    raw = blob.encode() if isinstance(blob, str) else blob
    assert isinstance(d.backend_agent_desc, bytes)
    assert d.backend_agent_desc == raw
    assert bytes(d) == raw and len(d) == len(raw)
    s = d.serialize()
    assert isinstance(s, bytes) and len(s) > 0
    assert tab.AgentDesc.deserialize(s).backend_agent_desc == raw
    assert tab.AgentDesc(d) == d


def test_agent_desc_deserialize_rejects_garbage():
    with pytest.raises(tab.MpixferError) as e:
        tab.AgentDesc.deserialize(b"nope")
    assert e.value.status_name == "MPIXFER_ERR_BAD_DESC"


def test_config_defaults():
    c = tab.BaseAgentConfig("n")
    assert c.name == "n"
    assert c.use_prog_thread is True
    assert c.multi_thread is False
    assert c.use_listen_thread is False
    assert c.enable_telemetry is False
    assert c.backend_params == {}
    assert tab.BaseAgentConfig() is not None


def test_config_custom_and_writes():
    params = {"key1": "value1", "key2": "value2"}
    c = tab.BaseAgentConfig(name="test_agent", use_prog_thread=False, multi_thread=True,
                            use_listen_thread=True, enable_telemetry=True,
                            backend_params=params)
    assert (c.name, c.use_prog_thread, c.multi_thread, c.use_listen_thread,
            c.enable_telemetry, c.backend_params) == ("test_agent", False, True, True, True,
                                                      params)
    c = tab.BaseAgentConfig()
    c.name = "modified_name"
    c.use_prog_thread = False
    c.multi_thread = True
    c.use_listen_thread = True
    c.enable_telemetry = True
    c.backend_params = {"test_key": "test_value"}
    c.num_workers = 4
    assert c.name == "modified_name"
    assert c.use_prog_thread is False and c.multi_thread is True
    assert c.use_listen_thread is True and c.enable_telemetry is True
    assert c.backend_params == {"test_key": "test_value"} and c.num_workers == 4


def test_transfer_request_attributes():
    src = tab.MemoryDescs(tab.MemoryType.VRAM, [tab.MemoryDesc(0x1000, 4096, 0)])
    dst = tab.MemoryDescs(tab.MemoryType.VRAM, [tab.MemoryDesc(0x2000, 4096, 1)])
    r = tab.TransferRequest(tab.TransferOp.WRITE, src, dst, "remote_agent")
    assert r.op == tab.TransferOp.WRITE
    assert r.remote_name == "remote_agent"
    assert r.src_descs.type == tab.MemoryType.VRAM and r.dst_descs.type == tab.MemoryType.VRAM
    assert r.src_descs.descs[0].addr == 0x1000 and r.dst_descs.descs[0].device_id == 1
    assert r.sync_message is None
    # The descriptor lists are shared, not moved: the caller's objects stay usable.
    assert len(src) == 1 and len(dst) == 1
    r2 = tab.TransferRequest(tab.TransferOp.READ, src, dst, "another_remote", b"\x00sync")
    assert r2.op == tab.TransferOp.READ and r2.remote_name == "another_remote"
    assert r2.sync_message == b"\x00sync"
    r3 = tab.TransferRequest(tab.TransferOp.READ, src, dst, "x", sync_message="done 3")
    assert r3.sync_message == "done 3"


def test_classes_and_factory():
    assert issubclass(tab.MpixferTransferAgent, tab.BaseTransferAgent)
    assert issubclass(tab.MpixferTransferStatus, tab.TransferStatus)
    assert issubclass(tab.MpixferLoopbackAgent, tab.BaseLoopbackAgent)
    assert issubclass(tab.MpixferError, RuntimeError)
    for m in ["register_memory", "deregister_memory", "load_remote_agent",
              "load_remote_agent_by_connection", "get_local_agent_desc",
              "get_local_connection_info", "invalidate_remote_agent",
              "submit_transfer_requests", "notify_sync_message",
              "get_notified_sync_messages", "check_remote_descs"]:
        assert hasattr(tab.MpixferTransferAgent, m), m
    assert tab.MPIXFER_ENABLED is True
    assert tab.NIXL_ENABLED is False and tab.MOONCAKE_ENABLED is False
    with pytest.raises(ValueError):
        tab.make_transfer_agent("nixl", tab.BaseAgentConfig("x"))


def test_factory_makes_agent(names):
    a = tab.make_transfer_agent("mpixfer", tab.BaseAgentConfig(names("a")))
    assert isinstance(a, tab.MpixferTransferAgent) and a.name == names("a")
    a.close()
    assert a.closed
    with pytest.raises(tab.MpixferError):
        a.get_local_agent_desc()


def test_generated_name_and_duplicate(names):
    with tab.MpixferTransferAgent(tab.BaseAgentConfig(use_prog_thread=False)) as a:
        assert a.name  # host_pid_counter
    with tab.MpixferTransferAgent(tab.BaseAgentConfig(names("dup"))):
        with pytest.raises(tab.MpixferError) as e:
            tab.MpixferTransferAgent(tab.BaseAgentConfig(names("dup")))
        assert e.value.status_name == "MPIXFER_ERR_EXISTS"
        assert "MPIXFER_ERR_EXISTS" in str(e.value)


def test_status_names():
    assert tab.status_name(0) == "MPIXFER_OK"
    assert tab.status_name(-3) == "MPIXFER_ERR_NOT_FOUND"
    assert tab.strerror(0) == "success"


def test_context_process_wide():
    c = tab.default_context()
    assert c.process_wide and c.size == 1 and c.rank == 0
    assert set(c.stats()) == {"requests", "rma_ops", "shm_copies", "local_copies",
                              "staged_chunks", "bytes", "window_attachments",
                              "links_accepted", "links_refused", "link_copies", "link_ops"}
    assert c.gpu_path in ("none", "direct", "staged")
    assert c.data_path(0) == "rma"
