"""await status: futures completed from the module's notifier thread."""
import asyncio
import time

import numpy as np

import mpixfer as tab


def make_pair(names, n_blocks, blk):
    a = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("a")))
    b = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("b")))
    src = np.random.default_rng(7).integers(0, 255, n_blocks * blk, dtype=np.uint8)
    dst = np.zeros_like(src)
    a.register_memory(src)
    b.register_memory(dst)
    a.load_remote_agent(b.name, b.get_local_agent_desc())
    return a, b, src, dst


def request(a, b, src, dst, first, count, blk, msg=None):
    idx = np.arange(first, first + count, dtype=np.int64)
    sizes = np.full(count, blk, dtype=np.int64)
    sd = tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM,
                                                    src.ctypes.data + idx * blk, sizes, 0)
    dd = tab.MemoryDescs.from_arrays_uniform_device(tab.MemoryType.DRAM,
                                                    dst.ctypes.data + idx * blk, sizes, 0)
    return tab.TransferRequest(tab.TransferOp.WRITE, sd, dd, b.name, msg)


def test_gather_hundred_transfers(names):
    # 100 requests of 100 blocks each: above 64 descriptors a request is queued by submit
    # and issued by progress, so most are still in flight when awaited.
    per, blk = 100, 512
    a, b, src, dst = make_pair(names, 100 * per, blk)
    reqs = [request(a, b, src, dst, i * per, per, blk, f"r{i}") for i in range(100)]

    async def main():
        statuses = [a.submit_transfer_requests(r) for r in reqs]
        return await asyncio.gather(*statuses)

    results = asyncio.run(main())
    assert results == [tab.TransferState.SUCCESS] * 100
    assert np.array_equal(src, dst)
    got = b.get_notified_sync_messages()[a.name]
    assert sorted(got) == sorted(f"r{i}".encode() for i in range(100))


def test_event_loop_stays_free(names):
    # While a big request is in flight, other coroutines of the loop keep running.
    # 4000 x 16 KiB: more blocks than a submit moves itself, so the request is queued, and
    # 64 MiB keep it in flight well past the first look of `await`.
    a, b, src, dst = make_pair(names, 4000, 16384)
    req = request(a, b, src, dst, 0, 4000, 16384)

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        state = await a.submit_transfer_requests(req)
        stop = True
        await t
        return state, ticks

    state, ticks = asyncio.run(main())
    assert state == tab.TransferState.SUCCESS and ticks >= 1
    assert np.array_equal(src, dst)


def test_await_finished_and_failed(names):
    a, b, src, dst = make_pair(names, 4, 64)

    async def main():
        st = a.submit_transfer_requests(request(a, b, src, dst, 0, 4, 64))
        st.wait()
        return await st, await st  # a finished status can be awaited again

    assert asyncio.run(main()) == (tab.TransferState.SUCCESS, tab.TransferState.SUCCESS)


def test_cancelled_await_is_harmless(names):
    a, b, src, dst = make_pair(names, 2000, 4096)

    async def main():
        st = a.submit_transfer_requests(request(a, b, src, dst, 0, 2000, 4096))
        task = asyncio.ensure_future(st)
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return st

    st = asyncio.run(main())
    assert st.wait(10_000) == tab.TransferState.SUCCESS
    time.sleep(0.05)  # the notifier completes a future of a closed loop: ignored
    assert np.array_equal(src, dst)
