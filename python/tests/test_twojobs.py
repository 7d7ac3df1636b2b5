"""Two separately launched Python processes (each its own MPI world, no mpiexec, no
server) meet by a descriptor blob in a file and move 1024 x 16 KiB scattered blocks over a
link, every byte checked on both sides, with sync messages both ways."""
import os
import subprocess
import sys

import pytest

PEER = os.path.join(os.path.dirname(__file__), "twojobs_peer.py")


@pytest.mark.parametrize("copy", ["auto", "ucx"])
def test_two_separate_processes(tmp_path, copy):
    env = dict(os.environ, MPIXFER_LINK_COPY=copy)
    procs = [subprocess.Popen([sys.executable, PEER, role, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for role in ("serve", "connect")]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=90)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for role, p, out in zip(("serve", "connect"), procs, outs):
        assert p.returncode == 0, f"{role} exited {p.returncode}:\n{out}"
    print(outs[1])
    if copy == "ucx":
        assert "link_copies 0," in outs[1], outs[1]
