"""GPU memory (VRAM) from Python: PyTorch CUDA tensors between two agents and to files.
Every case skips without a CUDA device; CTest then reports SKIP (conftest.py, rc 77)."""
import os

import pytest

import mpixfer as tab

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device (or a PyTorch without CUDA)", allow_module_level=True)


def test_cuda_tensors_write_and_read(names):
    a = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("a")))
    b = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("b")))
    src = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
    dst = torch.zeros_like(src)
    sd, dd = tab.MemoryDescs.from_tensors(src), tab.MemoryDescs.from_tensors(dst)
    assert sd.type == tab.MemoryType.VRAM
    a.register_memory(sd)
    b.register_memory(dd)
    a.load_remote_agent(b.name, b.get_local_agent_desc())
    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.WRITE, sd, dd, b.name))
    assert st.wait(10_000) == tab.TransferState.SUCCESS
    torch.cuda.synchronize()
    assert torch.equal(src, dst)
    dst.fill_(7.0)
    st = a.submit_transfer_requests(tab.TransferRequest(tab.TransferOp.READ, sd, dd, b.name))
    assert st.wait(10_000) == tab.TransferState.SUCCESS
    torch.cuda.synchronize()
    assert bool((src == 7.0).all())


def test_cuda_loopback(tmp_path):
    lb = tab.make_loopback_agent("mpixfer", tab.BaseAgentConfig("lb_gpu"))
    t = torch.randint(0, 255, (1 << 20,), dtype=torch.uint8, device="cuda")
    f = tab.FileDesc(str(tmp_path / "vram"), os.O_CREAT | os.O_RDWR, 0o600, t.numel())
    mem = tab.MemoryDescs.from_tensors(t)
    lb.execute_loopback_request(mem, [f], True)
    saved = t.clone()
    t.zero_()
    lb.execute_loopback_request(mem, [f], False)
    torch.cuda.synchronize()
    assert torch.equal(t, saved)
