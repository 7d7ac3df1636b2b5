"""py_install's check: the installed package imports from the prefix, its module resolves
the installed libmpixfer (not the build tree's), and a transfer moves checked bytes."""
import os
import sys

prefix = os.path.realpath(os.environ["MPIXFER_INSTALL_PREFIX"])

import numpy as np  # noqa: E402

import mpixfer as tab  # noqa: E402

pkg = os.path.realpath(os.path.dirname(tab.__file__))
assert pkg.startswith(prefix + os.sep), f"imported {pkg}, not from {prefix}"
with open("/proc/self/maps") as f:
    libs = {line.split()[-1] for line in f if "libmpixfer.so" in line}
libs = {os.path.realpath(p) for p in libs}
assert libs and all(p.startswith(prefix + os.sep) for p in libs), libs

a = tab.make_transfer_agent("mpixfer", tab.BaseAgentConfig("install_a"))
b = tab.make_transfer_agent("mpixfer", tab.BaseAgentConfig("install_b"))
src = np.arange(1 << 16, dtype=np.int32)
dst = np.zeros_like(src)
a.register_memory(src)
b.register_memory(dst)
a.load_remote_agent(b.name, b.get_local_agent_desc())
st = a.submit_transfer_requests(tab.TransferRequest(
    tab.TransferOp.WRITE, tab.MemoryDescs.from_tensors(src), tab.MemoryDescs.from_tensors(dst),
    b.name, b"\x00installed"))
assert st.wait(10_000) == tab.TransferState.SUCCESS
assert np.array_equal(src, dst)
assert b.get_notified_sync_messages() == {a.name: [b"\x00installed"]}
print(f"install_check: mpixfer {tab.__version__} from {pkg}, library {sorted(libs)[0]}: ok")
sys.exit(0)
