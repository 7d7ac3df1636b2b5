"""One side of test_twojobs.py: a separately launched process (its own MPI world).

    twojobs_peer.py serve DIR     publishes DIR/blob (descriptor blob) and DIR/addr, waits
                                  for "written", checks every byte, answers "checked"
    twojobs_peer.py connect DIR   loads the server by that blob, WRITEs with a sync
                                  message, READs back, waits for "checked"

Exit 0 only when every check passed.
"""
import os
import sys
import time

import numpy as np

import mpixfer as tab

BLK, NBLK = 16384, 1024  # 1024 x 16 KiB, scattered
SEED = 21


def wait_for(pred, what, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            sys.exit(f"twojobs_peer: timed out waiting for {what}")
        time.sleep(0.002)


def publish(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)


def read_when_there(path):
    wait_for(lambda: os.path.exists(path), path)
    with open(path, "rb") as f:
        return f.read()


def messages(agent, sender):
    return agent.get_notified_sync_messages().get(sender, [])


def main():
    role, d = sys.argv[1], sys.argv[2]
    want = np.random.default_rng(SEED).integers(0, 256, BLK * NBLK, dtype=np.uint8)
    order = np.random.default_rng(SEED + 1).permutation(NBLK).astype(np.int64)
    buf = np.zeros(BLK * NBLK, dtype=np.uint8)
    with tab.MpixferTransferAgent(tab.BaseAgentConfig(role, use_listen_thread=True)) as me:
        me.register_memory(buf)
        if role == "serve":
            publish(os.path.join(d, "addr"), str(buf.ctypes.data).encode())
            publish(os.path.join(d, "blob"), me.get_local_agent_desc().backend_agent_desc)
            got = wait_for(lambda: messages(me, "connect"), "'written'")
            assert got == [b"written"], got
            # Block i of the client's buffer went to block order[i] here.
            assert np.array_equal(buf.reshape(NBLK, BLK)[order], want.reshape(NBLK, BLK))
            me.notify_sync_message("connect", b"checked")
            wait_for(lambda: messages(me, "connect") == [b"bye"], "'bye'")
        else:
            addr = int(read_when_there(os.path.join(d, "addr")))
            me.load_remote_agent("serve", tab.AgentDesc(read_when_there(os.path.join(d, "blob"))))
            sizes = np.full(NBLK, BLK, dtype=np.int64)
            far = tab.MemoryDescs.from_arrays_uniform_device(
                tab.MemoryType.DRAM, addr + order * BLK, sizes, 0)
            t0 = time.monotonic()
            wait_for(lambda: me.check_remote_descs("serve", far), "the link")
            t_usable = time.monotonic() - t0
            buf[:] = want
            near = tab.MemoryDescs.from_arrays_uniform_device(
                tab.MemoryType.DRAM, buf.ctypes.data + np.arange(NBLK, dtype=np.int64) * BLK,
                sizes, 0)
            t0 = time.monotonic()
            st = me.submit_transfer_requests(
                tab.TransferRequest(tab.TransferOp.WRITE, near, far, "serve", b"written"))
            assert st.wait(30_000) == tab.TransferState.SUCCESS, st.get_last_status_str()
            t_write = time.monotonic() - t0
            buf[:] = 0
            t0 = time.monotonic()
            st = me.submit_transfer_requests(
                tab.TransferRequest(tab.TransferOp.READ, near, far, "serve"))
            assert st.wait(30_000) == tab.TransferState.SUCCESS, st.get_last_status_str()
            t_read = time.monotonic() - t0
            assert np.array_equal(buf, want)
            got = wait_for(lambda: messages(me, "serve"), "'checked'")
            assert got == [b"checked"], got
            s = me.context.stats()
            assert s["link_copies"] + s["link_ops"] > 0, s
            print(f"twojobs_peer: usable after {t_usable * 1e3:.1f} ms; 1024 x 16 KiB WRITE "
                  f"{buf.nbytes / t_write / 1e9:.2f} GB/s, READ {buf.nbytes / t_read / 1e9:.2f}"
                  f" GB/s (link_copies {s['link_copies']}, link_ops {s['link_ops']})")
            me.notify_sync_message("serve", b"bye")
            # The server exits on "bye"; the link is ours to close: flush by invalidating.
            me.invalidate_remote_agent("serve")
        me.deregister_memory(buf)


if __name__ == "__main__":
    main()
