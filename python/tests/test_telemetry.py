"""Telemetry: MpixferTransferAgent.stats() and Context.prometheus() equal what moved."""
import re

import numpy as np
import pytest
from mpi4py import MPI

import mpixfer as tab


def descs(obj):
    return tab.MemoryDescs.from_tensors(obj)


def exchange(a, b):
    a.load_remote_agent(b.name, b.get_local_agent_desc())
    b.load_remote_agent(a.name, a.get_local_agent_desc())


def samples(text):
    """{'name{labels}': value} of every sample line; checks HELP/TYPE come first."""
    out, declared = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif line.startswith("# HELP "):
            continue
        else:
            series, value = line.rsplit(" ", 1)
            name = re.sub(r"(_bucket|_sum|_count)$", "", series.split("{")[0])
            assert series.split("{")[0] in declared or name in declared, line
            out[series] = float(value)
    return out


@pytest.mark.parametrize("enable_telemetry", [False, True])
def test_counters_equal_what_moved(names, enable_telemetry):
    with tab.Context(MPI.COMM_SELF) as ctx:
        cfg = dict(enable_telemetry=enable_telemetry)
        a = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("a"), **cfg), context=ctx)
        b = tab.MpixferTransferAgent(tab.BaseAgentConfig(names("b"), **cfg), context=ctx)
        src = np.arange(4096, dtype=np.uint8)
        dst = np.zeros_like(src)
        a.register_memory(descs(src))
        b.register_memory(descs(dst))
        exchange(a, b)
        zero = a.stats()
        assert zero["requests"] == 0 and zero["post_time"]["count"] == 0
        assert zero["failures"] == {} and len(zero["post_time"]["buckets"]) == 32

        sent = received = 0
        for n in (8, 100, 4096):
            src[:n] = np.arange(n) % 251
            st = a.submit_transfer_requests(
                tab.TransferRequest(tab.TransferOp.WRITE, descs(src[:n]), descs(dst[:n]), b.name,
                                    b"done"))
            assert st.wait() == tab.TransferState.SUCCESS
            assert np.array_equal(dst[:n], src[:n])
            sent += n
            dst[:n] = 7
            st = a.submit_transfer_requests(
                tab.TransferRequest(tab.TransferOp.READ, descs(src[:n]), descs(dst[:n]), b.name))
            assert st.wait() == tab.TransferState.SUCCESS
            assert (src[:n] == 7).all()
            received += n
        a.notify_sync_message(b.name, b"hi")
        with pytest.raises(tab.MpixferError):
            a.submit_transfer_requests(
                tab.TransferRequest(tab.TransferOp.WRITE, descs(src[:8]), descs(dst[:8]),
                                    "nobody"))
        assert len(b.get_notified_sync_messages()[a.name]) == 4

        s = a.stats()
        assert s["requests"] == 6 and s["requests_succeeded"] == 6
        assert s["requests_failed"] == 0 and s["failures"] == {}
        assert s["submit_errors"] == 1
        assert s["bytes_sent"] == sent and s["bytes_received"] == received
        assert s["sync_messages_sent"] == 4 and s["sync_messages_received"] == 0
        for h in ("post_time", "transfer_time"):
            assert s[h]["count"] == 6 and sum(s[h]["buckets"]) == 6 and s[h]["sum_ns"] > 0
            assert s[h]["bounds_ns"][0] == 256 and s[h]["bounds_ns"][-1] is None
        assert s["transfer_time"]["sum_ns"] >= s["post_time"]["sum_ns"]
        sb = b.stats()
        assert sb["requests"] == 0 and sb["sync_messages_received"] == 4

        text = ctx.prometheus()
        m = samples(text)
        la, lb = f'{{agent="{a.name}"}}', f'{{agent="{b.name}"}}'
        assert m["mpixfer_agent_requests_total" + la] == 6
        assert m["mpixfer_agent_bytes_sent_total" + la] == sent
        assert m["mpixfer_agent_bytes_received_total" + la] == received
        assert m["mpixfer_agent_sync_messages_received_total" + lb] == 4
        assert m["mpixfer_agent_submit_errors_total" + la] == 1
        assert m[f'mpixfer_agent_failures_total{{agent="{a.name}",status="MPIXFER_ERR_TIMEOUT"}}'] == 0
        assert m["mpixfer_agent_transfer_time_seconds_count" + la] == 6
        inf = f'mpixfer_agent_post_time_seconds_bucket{{agent="{a.name}",le="+Inf"}}'
        assert m[inf] == 6
        buckets = [v for k, v in m.items()
                   if k.startswith(f'mpixfer_agent_post_time_seconds_bucket{{agent="{a.name}",')]
        assert len(buckets) == 32 and buckets == sorted(buckets)
        assert abs(m["mpixfer_agent_post_time_seconds_sum" + la]
                   - s["post_time"]["sum_ns"] * 1e-9) < 1e-9
        assert m['mpixfer_requests_total{rank="0"}'] == ctx.stats()["requests"] == 6
        a.close()
        assert f'agent="{a.name}"' not in ctx.prometheus()
        with pytest.raises(tab.MpixferError):
            a.stats()
        b.close()
    with pytest.raises(tab.MpixferError):
        ctx.prometheus()


def test_default_context_prometheus(names):
    with tab.MpixferTransferAgent(tab.BaseAgentConfig(names('q"\\'))) as a:
        text = tab.default_context().prometheus()
        assert f'mpixfer_agent_requests_total{{agent="{a.name[:-2]}\\"\\\\"}} 0' in text
