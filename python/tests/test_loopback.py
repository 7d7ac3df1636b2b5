"""Loopback agents: memory to files and back within one process (TensorRT-LLM's
BaseLoopbackAgent.execute_loopback_request)."""
import os

import numpy as np
import pytest

import mpixfer as tab


@pytest.mark.parametrize("multi_thread", [False, True])
def test_offload_and_load_dram(tmp_path, multi_thread):
    lb = tab.make_loopback_agent("mpixfer", tab.BaseAgentConfig("lb", multi_thread=multi_thread))
    assert isinstance(lb, tab.BaseLoopbackAgent)
    rng = np.random.default_rng(3)
    blocks = [rng.integers(0, 256, n, dtype=np.uint8) for n in (1, 4096, 100_000, 1 << 20)]
    files = [tab.FileDesc(str(tmp_path / f"b{i}"), os.O_CREAT | os.O_RDWR, 0o600, b.nbytes)
             for i, b in enumerate(blocks)]
    mem = tab.MemoryDescs.from_tensors(blocks)
    lb.execute_loopback_request(mem, tab.FileDescs(files), True)
    for i, b in enumerate(blocks):
        assert (tmp_path / f"b{i}").read_bytes() == b.tobytes()
    saved = [b.copy() for b in blocks]
    for b in blocks:
        b[:] = 0
    lb.execute_loopback_request(mem, files, False)  # a plain list of FileDesc works too
    for b, s in zip(blocks, saved):
        assert np.array_equal(b, s)
    assert lb.last_path != ""


def test_from_fd_with_offset(tmp_path):
    lb = tab.MpixferLoopbackAgent(tab.BaseAgentConfig("lb_fd"))
    path = tmp_path / "extent"
    path.write_bytes(b"\xab" * 8192)
    fd = os.open(path, os.O_RDWR)
    try:
        src = np.arange(4096, dtype=np.uint8)
        f = tab.FileDesc.from_fd(fd, src.nbytes, 4096)
        assert (f.fd, f.len, f.offset) == (fd, 4096, 4096)
        lb.execute_loopback_request(tab.MemoryDescs.from_tensors(src), [f], True)
        data = path.read_bytes()
        assert data[:4096] == b"\xab" * 4096 and data[4096:] == src.tobytes()
        dst = np.zeros_like(src)
        lb.execute_loopback_request(tab.MemoryDescs.from_tensors(dst), [f], False)
        assert np.array_equal(dst, src)
    finally:
        os.close(fd)  # from_fd: the caller keeps owning the descriptor


def test_loopback_errors(tmp_path):
    lb = tab.make_loopback_agent("mpixfer", tab.BaseAgentConfig("lb_err"))
    buf = np.zeros(64, dtype=np.uint8)
    mem = tab.MemoryDescs.from_tensors(buf)
    # Counts differ: one memory range, two files.
    f1 = tab.FileDesc(str(tmp_path / "x"), os.O_CREAT | os.O_RDWR, 0o600, 64)
    f2 = tab.FileDesc(str(tmp_path / "y"), os.O_CREAT | os.O_RDWR, 0o600, 64)
    with pytest.raises(tab.MpixferError) as e:
        lb.execute_loopback_request(mem, [f1, f2], True)
    assert e.value.status_name.startswith("MPIXFER_ERR_")
    # A descriptor that is not open.
    with pytest.raises(tab.MpixferError) as e:
        lb.execute_loopback_request(mem, [tab.FileDesc.from_fd(-1, 64)], True)
    assert e.value.status_name.startswith("MPIXFER_ERR_")
    # Loading past the end of a file moves nothing into memory it does not have.
    with pytest.raises(tab.MpixferError):
        lb.execute_loopback_request(mem, [tab.FileDesc(str(tmp_path / "empty"),
                                                       os.O_CREAT | os.O_RDWR, 0o600, 64)],
                                    False)
    with pytest.raises(OSError):
        tab.FileDesc(str(tmp_path / "no" / "such"), os.O_RDONLY, 0, 8)
    with pytest.raises(ValueError):
        tab.make_loopback_agent("nixl", tab.BaseAgentConfig("lb_x"))
