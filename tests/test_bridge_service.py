"""The bridge service against an in-process server speaking Broker's WebSocket JSON v1.

Each test checks the counters and that nothing accepted is lost silently:
flows in = results out + flows dropped (by reason) once the service is idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from multa_broker.bench.fakezeek import FakeZeek, flow_record_json, flows_message, flows_message_text
from multa_broker.bridge import codec
from multa_broker.bridge.service import BridgeService, FlowQueue, PendingResults, _Queued
from multa_broker.errors import MultaError
from multa_broker.protocol import NODE_RESULT_TOPIC_PREFIX

from support.bridge import (accounted, bridge_config, expected_labels, make_flow, running, slow_loader,
                           tiny_loader, wait_until, write_tiny_model)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "store" / "tiny" / "1")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def balanced(svc: BridgeService) -> None:
    fin, fout, dropped = accounted(svc)
    assert fin == fout + dropped, (fin, fout, dropped, svc.metrics.summary())


def check_results(zeek: FakeZeek, flows) -> None:
    """Every flow got exactly one result, with the labels its flow implies."""
    by_uid = {r.uid: r for r in zeek.results()}
    assert len(by_uid) == len(zeek.results()) == len(flows)
    for f in flows:
        r = by_uid[f.uid]
        assert dict(zip(r.tasks, r.labels)) == expected_labels(f)
        assert r.model == "tiny/1" and all(0.0 <= s <= 1.0 for s in r.scores)
    assert not zeek.rejected  # every result had Zeek's exact types


def test_flows_in_results_out(model):
    async def main():
        zeek = await FakeZeek().start()
        flows = [make_flow(i, proto="udp" if i % 2 else "tcp") for i in range(500)]
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            assert zeek.handshakes == [["multa/flows"]]
            for k in range(0, 500, 100):
                await zeek.send_flows(flows[k:k + 100])
            await wait_until(lambda: len(zeek.results()) == 500, what="500 results")
            check_results(zeek, flows)
            assert {r.topic for r in zeek.received} == {"multa/results"}
            m = svc.metrics
            assert m.value("multa_bridge_connected") == 1
            assert m.value("multa_bridge_batch_size_count") >= 8  # batch.max_flows is 64 in tests
            assert m.value("multa_bridge_batch_size_sum") == 500
            assert m.value("multa_bridge_inference_seconds_count") == m.value("multa_bridge_batch_size_count")
            balanced(svc)
        await zeek.stop()
    run(main())


def test_results_go_to_the_sending_nodes_topic_when_asked(model):
    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, topics={"flows": ["multa/flows/0-of-2"], "per_node": True})
        async with running(cfg):
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(i) for i in range(3)], node="worker-1", topic="multa/flows/0-of-2")
            await zeek.send_flows([make_flow(i) for i in range(3, 5)], node="worker-2", topic="multa/flows/0-of-2")
            # Another shard's topic: this bridge did not subscribe to it.
            assert await zeek.send_flows([make_flow(9)], topic="multa/flows/1-of-2") == 0
            await wait_until(lambda: len(zeek.results()) == 5)
        topics = {r.uid: rec.topic for rec in zeek.received for r in rec.results}
        assert topics == {**{f"Cf{i:06d}": NODE_RESULT_TOPIC_PREFIX + "worker-1" for i in range(3)},
                          **{f"Cf{i:06d}": NODE_RESULT_TOPIC_PREFIX + "worker-2" for i in range(3, 5)}}
        await zeek.stop()
    run(main())


def test_small_batches_wait_at_most_max_wait(model):
    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, batch={"max_flows": 1000, "max_wait_ms": 30.0})
        async with running(cfg) as svc:
            await zeek.wait_subscribed()
            t0 = time.monotonic()
            await zeek.send_flows([make_flow(1)])
            await asyncio.sleep(0.005)
            await zeek.send_flows([make_flow(2)])
            await wait_until(lambda: len(zeek.results()) == 2)
            waited = time.monotonic() - t0
            assert 0.03 <= waited < 2.0
            # Both flows arrived within max_wait of each other: one batch, not two.
            assert svc.metrics.value("multa_bridge_batch_size_count") == 1
        await zeek.stop()
    run(main())


def test_garbage_and_wrong_types_are_counted_and_skipped(model):
    async def main():
        zeek = await FakeZeek().start()
        good = [make_flow(i) for i in range(10)]
        bad_rec = flow_record_json(make_flow(100))
        bad_rec["data"][6]["data"][0] = {"@data-type": "real", "data": 60.0}    # size as real
        long_rec = flow_record_json(make_flow(101, n=65))                          # longer than the contract
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_raw("this is not JSON")
            await zeek.send_raw('{"type":"data-message","topic":"multa/flows","@data-type":"count","data":1}')
            await zeek.send_raw(json.dumps({"type": "data-message", "topic": "multa/flows",
                                            **codec.event_data("Other::event", [])}))
            await zeek.send_raw(json.dumps({"type": "data-message", "topic": "multa/flows",
                                            **codec.event_data("Multa::flows", [codec.encode(1)])}))
            await zeek.send_raw('{"type":"surprise"}')
            await zeek.send_raw('{"type":"error","code":"deserialization_failed","context":"bad result"}')
            recs = ",".join(json.dumps(r) for r in [flow_record_json(good[0]), bad_rec, long_rec])
            await zeek.send_text("multa/flows", flows_message_text("multa/flows", "w", recs))
            await zeek.send_flows(good[1:])
            await wait_until(lambda: len(zeek.results()) == 10)
            await asyncio.sleep(0.05)
            m = svc.metrics
            assert m.value("multa_bridge_malformed_messages_total", reason="bad_json") == 1
            assert m.value("multa_bridge_malformed_messages_total", reason="not_an_event") == 1
            assert m.value("multa_bridge_malformed_messages_total", reason="unexpected_event") == 1
            assert m.value("multa_bridge_malformed_messages_total", reason="bad_arguments") == 1
            assert m.value("multa_bridge_malformed_messages_total", reason="unexpected_type") == 1
            assert m.value("multa_bridge_peer_errors_total", code="deserialization_failed") == 1
            assert m.value("multa_bridge_flows_in_total") == 12
            assert m.dropped("invalid") == 2
            assert m.value("multa_bridge_connected") == 1  # still the same connection
            assert m.value("multa_bridge_reconnects_total") == 0
            check_results(zeek, good)
            balanced(svc)
        await zeek.stop()
    run(main())


def test_contract_versions_context_and_bad_context_are_counted(model, caplog):
    """Issue 15: v2 flows (with and without ctx) and v1 flows from an older Zeek package are
    classified alike; a bad ctx drops its flow alone as bad_context; a v1 node is logged once."""
    async def main():
        zeek = await FakeZeek().start()
        v2 = [make_flow(i) for i in range(10)]
        for i, f in enumerate(v2):
            f.ctx = None if i < 3 else (i, 1, 1, 0, 2, 1)
        v1 = [make_flow(100 + i) for i in range(5)]
        bad = flow_record_json(make_flow(200))
        bad["data"][9] = {"@data-type": "vector", "data": [{"@data-type": "count", "data": 1}] * 5}
        over = flow_record_json(make_flow(201))
        over["data"][9] = {"@data-type": "vector", "data": [{"@data-type": "count", "data": 1001}] * 6}
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            with caplog.at_level("WARNING", logger="multa.bridge"):
                await zeek.send_flows(v2, node="new-1")
                await zeek.send_flows(v1[:2], node="old-1", version=1)
                await zeek.send_flows(v1[2:], node="old-1", version=1)
                recs = ",".join(json.dumps(r) for r in [bad, over])
                await zeek.send_text("multa/flows", flows_message_text("multa/flows", "new-1", recs))
                await wait_until(lambda: len(zeek.results()) == 15)
                await asyncio.sleep(0.05)
            check_results(zeek, v2 + v1)
            m = svc.metrics
            assert m.value("multa_bridge_flows_in_total") == 17
            assert m.value("multa_bridge_flows_contract_total", version="2") == 12
            assert m.value("multa_bridge_flows_contract_total", version="1") == 5
            assert m.value("multa_bridge_flows_contract_total", version="unknown") == 0
            assert m.value("multa_bridge_flows_without_context_total") == 3 + 5
            assert m.dropped("bad_context") == 2 and m.dropped("invalid") == 0
            balanced(svc)
            mixed = [r for r in caplog.records if "mixed deployment" in r.getMessage()]
            assert len(mixed) == 1 and "old-1" in mixed[0].getMessage()
        await zeek.stop()
    run(main())


def test_runner_and_worker_carry_host_context_to_the_classifier(monkeypatch):
    """model.worker: process rebuilds EncodedBatch from arrays: ctx and has_ctx must cross too."""
    import dataclasses
    import io

    import numpy as np

    from multa_broker.bridge import model as modelmod
    from multa_broker.bridge import worker
    from multa_broker.bridge.runner import ProcessRunner
    from multa_broker.flow import EncodedBatch, encode

    flows = [make_flow(i) for i in range(4)]
    flows[1].ctx, flows[3].ctx = (1, 2, 3, 4, 5, 6), (0, 0, 0, 0, 1000, 1)
    info = modelmod.ModelInfo("fake/1", ("service",), 20, {"service": ("a", "b")}, {"service": 0.0})
    sent: list = []

    async def fake_call(*req):
        sent.append(req)
        return [np.tile([0.25, 0.75], (len(flows), 1))]

    runner = ProcessRunner(1)
    runner.model = info
    monkeypatch.setattr(runner, "_call", fake_call)
    assert len(asyncio.run(runner.classify(flows))) == 4
    (req,) = sent
    assert req[0] == "probs" and len(req) == 1 + len(dataclasses.fields(EncodedBatch))

    seen: list = []

    class Fake:
        name, tasks, n, classes, thresholds = info.name, info.tasks, info.n, info.classes, info.thresholds

        def probabilities(self, batch):
            seen.append(batch)
            return [np.tile([0.25, 0.75], (len(batch), 1))]

    monkeypatch.setattr(modelmod, "load_classifier", lambda path, thresholds, sha256: Fake())
    inp, out = io.BytesIO(), io.BytesIO()
    worker.write_frame(inp, ("load", "x", None, 1, None))
    worker.write_frame(inp, req)
    inp.seek(0)
    worker.serve(inp, out)
    out.seek(0)
    assert worker.read_frame(out)[0] == "ok" and worker.read_frame(out)[0] == "ok"
    want = encode(flows, 20)
    (got,) = seen
    for f in dataclasses.fields(EncodedBatch):
        assert np.array_equal(getattr(got, f.name), getattr(want, f.name)), f.name
    assert got.has_ctx.tolist() == [False, True, False, True] and got.ctx[1].tolist() == [1, 2, 3, 4, 5, 6]


def test_flows_longer_than_the_model_are_truncated(tmp_path):
    model = write_tiny_model(tmp_path / "m", n=8)

    async def main():
        zeek = await FakeZeek().start()
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(1, n=30), make_flow(2, n=8), make_flow(3, n=3)])
            await wait_until(lambda: len(zeek.results()) == 3)
            assert svc.metrics.value("multa_bridge_flows_truncated_total") == 1
            balanced(svc)
        await zeek.stop()
    run(main())


def test_zeek_restart_mid_stream_loses_nothing(model):
    """Zeek goes away while flows are in the model; results wait, then go out after the reconnect."""

    async def main():
        zeek = await FakeZeek().start()
        port = zeek.port
        flows = [make_flow(i) for i in range(200)]
        cfg = bridge_config(zeek.url, model, batch={"max_flows": 50, "max_wait_ms": 1.0})
        async with running(cfg, loader=slow_loader(0.3)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows(flows[:100])
            await wait_until(lambda: svc.metrics.value("multa_bridge_flows_in_total") == 100)
            await zeek.stop()  # Zeek exits with ~100 flows queued or in the model
            await wait_until(lambda: svc.metrics.value("multa_bridge_connected") == 0)
            await asyncio.sleep(0.8)  # the model finishes batches while Zeek is away
            assert svc.metrics.value("multa_bridge_pending_results") > 0
            assert svc.metrics.value("multa_bridge_connect_failures_total") >= 1
            zeek2 = await FakeZeek(port=port).start()  # Zeek is back on the same port
            await zeek2.wait_subscribed()
            await zeek2.send_flows(flows[100:])
            await wait_until(lambda: len(zeek.results()) + len(zeek2.results()) == 200, 20, "all results")
            assert svc.metrics.value("multa_bridge_reconnects_total") == 1
            assert svc.metrics.value("multa_bridge_pending_results") == 0
            balanced(svc)
            assert svc.metrics.dropped() == 0
            got = {r.uid for r in zeek.results() + zeek2.results()}
            assert got == {f.uid for f in flows}
        await zeek2.stop()
    run(main())


def test_pending_buffer_overflow_is_counted(model):
    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, queue={"max_pending_results": 30},
                            reconnect={"initial_s": 0.05, "max_s": 0.1, "jitter": 0.0})
        async with running(cfg, loader=slow_loader(0.0)) as svc:
            await zeek.wait_subscribed()
            port = zeek.port
            # Hold back results: the first send fails because Zeek is gone by then.
            svc.classifier.delay_s = 0.3
            await zeek.send_flows([make_flow(i) for i in range(100)])
            await wait_until(lambda: svc.metrics.value("multa_bridge_flows_in_total") == 100)
            await zeek.stop()
            await wait_until(lambda: svc.metrics.value("multa_bridge_pending_results") == 30, 10)
            await wait_until(lambda: svc.metrics.dropped("pending_overflow") == 70, 10)
            svc.classifier.delay_s = 0.0
            zeek2 = await FakeZeek(port=port).start()
            await wait_until(lambda: len(zeek2.results()) == 30, 10)
            # The 30 newest results survive.
            assert sorted(r.uid for r in zeek2.results()) == [f"Cf{i:06d}" for i in range(70, 100)]
            balanced(svc)
        await zeek2.stop()
    run(main())


def test_connect_failures_back_off_and_never_crash(model):
    async def main():
        zeek = await FakeZeek().start()
        port = zeek.port
        await zeek.stop()  # nothing listens there now
        cfg = bridge_config(f"ws://127.0.0.1:{port}/v1/messages/json", model,
                            reconnect={"initial_s": 0.02, "max_s": 0.1, "jitter": 0.5})
        async with running(cfg) as svc:
            await wait_until(lambda: svc.metrics.value("multa_bridge_connect_failures_total") >= 4, 10)
            zeek = await FakeZeek(port=port).start()
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(1)])
            await wait_until(lambda: len(zeek.results()) == 1)
            assert svc.metrics.value("multa_bridge_reconnects_total") == 0  # first connection
        await zeek.stop()
    run(main())


def test_handshake_refused_counts_as_failure(model):
    """A server that answers the subscription with an error is retried like a dead one."""
    from websockets.asyncio.server import serve

    async def refuse(ws):
        await ws.recv()
        await ws.send(json.dumps({"type": "error", "code": "deserialization_failed", "context": "no"}))
        await ws.close()

    async def main():
        server = await serve(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = bridge_config(f"ws://127.0.0.1:{port}/v1/messages/json", model)
        async with running(cfg) as svc:
            await wait_until(lambda: svc.metrics.value("multa_bridge_connect_failures_total") >= 2)
            assert svc.metrics.value("multa_bridge_connected") == 0
        server.close()
    run(main())


@pytest.mark.parametrize("policy", ["newest", "oldest"])
def test_overload_drops_by_policy_and_memory_stays_bounded(model, policy):

    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, queue={"max_flows": 100, "drop": policy},
                            batch={"max_flows": 50, "max_wait_ms": 1.0})
        flows = [make_flow(i) for i in range(1000)]
        async with running(cfg, loader=slow_loader(0.2)) as svc:
            await zeek.wait_subscribed()
            for k in range(0, 1000, 100):
                await zeek.send_flows(flows[k:k + 100])
            await wait_until(lambda: svc.metrics.value("multa_bridge_flows_in_total") == 1000)
            assert svc.metrics.value("multa_bridge_queue_depth") <= 100
            await wait_until(lambda: sum(accounted(svc)[1:]) == 1000, 20, "every flow answered or dropped")
            dropped = svc.metrics.dropped("queue_full")
            assert dropped >= 800
            await wait_until(lambda: len(zeek.results()) == 1000 - dropped, what="results delivered")
            uids = sorted(r.uid for r in zeek.results())
            if policy == "oldest":
                assert "Cf000999" in uids  # the newest flows survive
            else:
                assert "Cf000000" in uids and "Cf000999" not in uids
            balanced(svc)
        await zeek.stop()
    run(main())


def test_model_file_change_reloads_between_batches(model, tmp_path):
    async def main():
        zeek = await FakeZeek().start()
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(i) for i in range(5)])
            await wait_until(lambda: len(zeek.results()) == 5)
            write_tiny_model(model, version="2")
            await wait_until(lambda: svc.metrics.value("multa_bridge_model_reloads_total", result="ok") == 1, 10)
            await zeek.send_flows([make_flow(i) for i in range(5, 10)])
            await wait_until(lambda: len(zeek.results()) == 10)
            names = [r.model for r in zeek.results()]
            assert names[:5] == ["tiny/1"] * 5 and names[5:] == ["tiny/2"] * 5
            # A broken model (its manifest no longer matches the archive) keeps the running one.
            manifest = json.loads((model / "manifest.json").read_text())
            manifest["version"] = "broken"
            (model / "manifest.json").write_text(json.dumps(manifest))
            await wait_until(lambda: svc.metrics.value("multa_bridge_model_reloads_total", result="failed") == 1, 10)
            await zeek.send_flows([make_flow(11)])
            await wait_until(lambda: len(zeek.results()) == 11)
            assert zeek.results()[-1].model == "tiny/2"
            balanced(svc)
        await zeek.stop()
    run(main())


def test_reload_request_without_polling(model):
    """SIGHUP's path: with polling off, only an explicit request reloads."""
    async def main():
        zeek = await FakeZeek().start()
        async with running(bridge_config(zeek.url, model, model={"path": str(model), "poll_s": 0})) as svc:
            write_tiny_model(model, version="2")
            await asyncio.sleep(0.3)
            assert svc.classifier.name == "tiny/1"
            svc.request_reload()
            await wait_until(lambda: svc.classifier.name == "tiny/2", 10)
            assert svc.metrics.value("multa_bridge_model_reloads_total", result="ok") == 1
        await zeek.stop()
    run(main())


def test_reload_under_load_drops_nothing(model):
    async def main():
        zeek = await FakeZeek().start()
        flows = [make_flow(i) for i in range(2000)]
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            for k in range(0, 2000, 100):
                await zeek.send_flows(flows[k:k + 100])
                if k == 500:
                    write_tiny_model(model, version="2")
                    svc.request_reload()
            await wait_until(lambda: len(zeek.results()) == 2000, 20)
            assert svc.metrics.dropped() == 0
            assert {r.model for r in zeek.results()} <= {"tiny/1", "tiny/2"}
            balanced(svc)
        await zeek.stop()
    run(main())


def test_inference_error_drops_the_batch_only(tmp_path):
    broken = write_tiny_model(tmp_path / "broken", fail=True)

    async def main():
        zeek = await FakeZeek().start()
        async with running(bridge_config(zeek.url, broken)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(i) for i in range(10)])
            await wait_until(lambda: svc.metrics.dropped("inference_error") == 10)
            assert svc.metrics.value("multa_bridge_connected") == 1
            balanced(svc)
        await zeek.stop()
    run(main())


def test_stop_drains_queued_flows_then_returns_0(model):

    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, batch={"max_flows": 20, "max_wait_ms": 1.0})
        svc = BridgeService(cfg, loader=slow_loader(0.1))
        task = asyncio.create_task(svc.run())
        await zeek.wait_subscribed()
        await zeek.send_flows([make_flow(i) for i in range(100)])
        await wait_until(lambda: svc.metrics.value("multa_bridge_flows_in_total") == 100)
        svc.stop()
        assert await asyncio.wait_for(task, 10) == 0
        assert len(zeek.results()) == 100 and svc.metrics.dropped() == 0
        await zeek.stop()
    run(main())


def test_drain_timeout_counts_leftovers_as_shutdown(model):

    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, batch={"max_flows": 10, "max_wait_ms": 1.0}, drain_timeout_s=0.3)
        svc = BridgeService(cfg, loader=slow_loader(0.2))
        task = asyncio.create_task(svc.run())
        await zeek.wait_subscribed()
        await zeek.send_flows([make_flow(i) for i in range(100)])
        await wait_until(lambda: svc.metrics.value("multa_bridge_flows_in_total") == 100)
        svc.stop()
        assert await asyncio.wait_for(task, 10) == 0
        out, dropped = accounted(svc)[1:]
        assert out + dropped == 100 and svc.metrics.dropped("shutdown") == dropped > 0
        assert len(zeek.results()) == out
        await zeek.stop()
    run(main())


def test_metrics_endpoint_serves_the_counters(model):
    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, metrics={"enabled": True, "port": 0})
        async with running(cfg) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(i) for i in range(7)])
            await wait_until(lambda: len(zeek.results()) == 7)
            url = f"http://127.0.0.1:{svc.metrics_port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        for line in ("multa_bridge_flows_in_total 7.0", "multa_bridge_flows_out_total 7.0",
                     'multa_bridge_flows_dropped_total{reason="queue_full"} 0.0', "multa_bridge_connected 1.0",
                     "multa_bridge_queue_depth", "multa_bridge_inference_seconds_bucket",
                     "multa_bridge_batch_size_bucket", "multa_bridge_reconnects_total",
                     'multa_bridge_model_reloads_total{result="failed"}'):
            assert line in text, line
        await zeek.stop()
    run(main())


def test_a_missing_model_is_a_one_line_error(tmp_path):
    cfg = bridge_config("ws://127.0.0.1:1/v1/messages/json", tmp_path / "nope")
    with pytest.raises(MultaError, match="nope"):
        asyncio.run(BridgeService(cfg, loader=tiny_loader).run())


# ------------------------------------------------------------ the bounded structures


def test_flow_queue_policies():
    async def main():
        items = [_Queued(make_flow(i), "w", float(i)) for i in range(10)]
        q = FlowQueue(4, "newest")
        assert q.put(items[:3]) == 0 and q.put(items[3:6]) == 2
        assert [x.flow.uid for x in q.take(10)] == [f"Cf{i:06d}" for i in range(4)]
        q = FlowQueue(4, "oldest")
        assert q.put(items[:3]) == 0 and q.put(items[3:6]) == 2
        assert [x.flow.uid for x in q.take(10)] == [f"Cf{i:06d}" for i in range(2, 6)]
        assert q.put(items) == 6 and [x.flow.uid for x in q.take(10)] == [f"Cf{i:06d}" for i in range(6, 10)]
    asyncio.run(main())


def test_pending_results_keep_the_newest_and_group_by_topic():
    from multa_broker.protocol import Result

    p = PendingResults(3)
    rs = [Result(f"C{i}", "m", (), (), ()) for i in range(5)]
    assert p.add("a", rs[:2]) == 0 and p.add("b", rs[2:]) == 2
    assert p.take(10) == ("b", rs[2:])
    p.put_back("b", rs[3:])
    assert p.take(1) == ("b", [rs[3]]) and len(p) == 1


def test_pending_results_keep_each_batchs_encoding():
    """Results kept while Zeek was away go out later in the encoding their node reads."""
    from multa_broker.bridge.transport import Route
    from multa_broker.protocol import Result

    p = PendingResults(10)
    rs = [Result(f"C{i}", "m", (), (), ()) for i in range(4)]
    p.add(Route("multa/results/w1", packed=True), rs[:2])
    p.add(Route("multa/results/w1", packed=False), rs[2:])
    assert p.take(10) == (Route("multa/results/w1", True), rs[:2])
    assert p.take(10) == (Route("multa/results/w1", False), rs[2:])


# ------------------------------------------------------------ model in a worker process


def test_worker_process_serves_reloads_and_survives_its_death(model):
    """model.worker: process (the default): results, a reload, and a killed worker."""
    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, model={"path": str(model), "poll_s": 0, "worker": "process"})
        async with running(cfg, loader=None) as svc:
            await zeek.wait_subscribed()
            flows = [make_flow(i, proto="udp" if i % 2 else "tcp") for i in range(100)]
            await zeek.send_flows(flows)
            await wait_until(lambda: len(zeek.results()) == 100, 30)
            check_results(zeek, flows)
            # A reload goes through the worker; a broken model keeps the old one.
            write_tiny_model(model, version="2")
            svc.request_reload()
            await wait_until(lambda: svc.classifier.name == "tiny/2", 30)
            (model / "model.pt").write_bytes(b"not a model")
            svc.request_reload()
            await wait_until(lambda: svc.metrics.value("multa_bridge_model_reloads_total", result="failed") == 1, 30)
            assert svc.classifier.name == "tiny/2"
            # The worker dies: its batch is lost and counted, the next batch is served by a new worker.
            os.kill(svc._runner._proc.pid, 9)
            await asyncio.sleep(0.2)
            await zeek.send_flows([make_flow(500)])
            await wait_until(lambda: svc.metrics.dropped("inference_error") == 1, 30)
            await zeek.send_flows([make_flow(501)])
            await wait_until(lambda: any(r.uid == "Cf000501" for r in zeek.results()), 30)
            assert zeek.results()[-1].model == "tiny/2"
            balanced(svc)
        await zeek.stop()
    run(main())


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    cert, key = tmp_path / "zeek.pem", tmp_path / "zeek.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_wss_with_ca_file_and_verification(model, tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def main():
        zeek = await FakeZeek(ssl=ctx).start()
        assert zeek.url.startswith("wss://")
        # Unknown CA with verification on: refused, retried, never connected.
        cfg = bridge_config(zeek.url, model)
        async with running(cfg) as svc:
            await wait_until(lambda: svc.metrics.value("multa_bridge_connect_failures_total") >= 2)
            assert zeek.clients == 0
        # Zeek's certificate given as the CA: connects and works.
        cfg = bridge_config(zeek.url, model, websocket={"url": zeek.url, "ca_file": str(cert),
                                                        "open_timeout_s": 2.0})
        async with running(cfg):
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(1)])
            await wait_until(lambda: len(zeek.results()) == 1)
        await zeek.stop()
    run(main())


@pytest.mark.parametrize("use_msgspec", [True, False])
def test_fuzzed_messages_never_raise_and_stay_accounted(use_msgspec, model):
    """Randomly damaged Multa::flows messages: each is skipped or split into good and bad flows."""
    import random

    from multa_broker.bridge.websocket import WebSocketTransport

    rng = random.Random(1234)
    base = json.loads(flows_message("multa/flows", "w", [make_flow(i, n=1 + i % 5) for i in range(4)]))
    junk = [None, True, -1, 2**70, 1.5, "", "x", [], {}, {"@data-type": "count"}, {"data": 1},
            {"@data-type": "vector", "data": [1, 2]}, {"@data-type": "count", "data": 1.0}]

    def nodes(x, path=()):
        yield path
        if isinstance(x, dict):
            for k, v in x.items():
                yield from nodes(v, path + (k,))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from nodes(v, path + (i,))

    def mutate(doc):
        doc = json.loads(json.dumps(doc))
        for _ in range(rng.randint(1, 3)):
            paths = [p for p in nodes(doc) if p]
            p = rng.choice(paths)
            parent = doc
            for k in p[:-1]:
                parent = parent[k]
            if isinstance(parent, list) and rng.random() < 0.2:
                del parent[p[-1]]
            else:
                parent[p[-1]] = json.loads(json.dumps(rng.choice(junk)))  # a fresh copy
        return json.dumps(doc)

    async def main():
        cfg = bridge_config("ws://127.0.0.1:1/v1/messages/json", model,
                            websocket={"url": "ws://127.0.0.1:1/v1/messages/json", "use_msgspec": use_msgspec})
        svc = BridgeService(cfg, loader=tiny_loader)
        svc._queue = FlowQueue(10**6, "newest")
        svc.classifier = tiny_loader(str(model), None)
        t = WebSocketTransport(cfg.websocket)
        for _ in range(800):
            text = mutate(base)
            if rng.random() < 0.1:
                text = text[: rng.randrange(len(text))]
            svc._handle(t.parse(text))
        m = svc.metrics
        assert m.value("multa_bridge_flows_in_total") == len(svc._queue) + m.dropped("invalid") \
            + m.dropped("bad_context")
        assert sum(m.value("multa_bridge_malformed_messages_total", reason=r) for r in
                   ("bad_json", "not_an_event", "unexpected_event", "bad_arguments", "unexpected_type")) > 50
        assert len(svc._queue) > 100  # mutations that missed the flows leave them intact
    asyncio.run(main())


def test_backoff_grows_caps_jitters_and_resets():
    from multa_broker.bridge.backoff import Backoff
    from multa_broker.bridge.config import ReconnectConfig

    b = Backoff(ReconnectConfig(initial_s=0.5, max_s=4.0, multiplier=2.0, jitter=0.0))
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    lo = Backoff(ReconnectConfig(initial_s=1.0, jitter=0.2), rand=lambda: 0.0).next()
    hi = Backoff(ReconnectConfig(initial_s=1.0, jitter=0.2), rand=lambda: 1.0).next()
    assert (lo, hi) == (pytest.approx(0.8), pytest.approx(1.2))


def test_rate_limited_log_counts_what_it_suppressed(caplog):
    import logging

    from multa_broker.bridge.ratelog import RateLimitedLog

    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("multa.test"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="multa.test"):
        assert rl.warning("a", "first")
        assert not rl.warning("a", "second") and not rl.warning("a", "third")
        assert rl.warning("b", "other kind")
        now[0] = 11.0
        assert rl.warning("a", "later")
    assert [r.getMessage() for r in caplog.records] == ["first", "other kind", "later (2 more like it not logged)"]
