"""Issue 16: a peer that misbehaves (hostile messages, oversized messages, a Zeek that stops
reading, a peer that acks and closes) -- the bridge stays up and counts what it drops.

Same harness as test_bridge_service.py: the service against an in-process Broker
WebSocket server; each test checks ``in = out + dropped`` where flows arrived.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from multa_broker.bench.fakezeek import FakeZeek, flow_record_json, flows_message_text

from test_bridge_service import balanced, run
from support.bridge import bridge_config, make_flow, running, wait_until, write_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "store" / "tiny" / "1")


def test_nested_and_bad_timestamp_messages_are_counted_and_the_bridge_stays_up(model):
    """Issue 16 (1), (4): a 500-deep message was a RecursionError that ended the bridge; one
    out-of-range timestamp lost its whole message, good flows and flows_in included."""
    from test_bridge_codec import _nested

    async def main():
        zeek = await FakeZeek().start()
        flows = [make_flow(i) for i in range(3)]
        recs = [flow_record_json(f) for f in flows]
        recs[1]["data"][5]["data"] = "9999-12-31T23:59:59-01:00"
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_raw(_nested(500))
            await zeek.send_text("multa/flows", flows_message_text("multa/flows", "w",
                                                                   ",".join(json.dumps(r) for r in recs)))
            await zeek.send_flows([make_flow(9)])
            await wait_until(lambda: len(zeek.results()) == 3, what="3 results")
            m = svc.metrics
            assert m.value("multa_bridge_malformed_messages_total", reason="too_deep") == 1
            assert m.value("multa_bridge_flows_in_total") == 4
            assert m.dropped("invalid") == 1
            assert {r.uid for r in zeek.results()} == {"Cf000000", "Cf000002", "Cf000009"}
            assert m.value("multa_bridge_connected") == 1 and m.value("multa_bridge_reconnects_total") == 0
            balanced(svc)
        await zeek.stop()
    run(main())


def test_oversized_message_is_counted_with_its_reason(model, caplog):
    """Issue 16 (5): a message over max_message_bytes closed the connection as 'lost Zeek' and was
    counted nowhere. It still closes the connection (a WebSocket frame cannot be skipped), but is
    counted as malformed{too_big}; the bridge reconnects and serves the next flows."""
    import logging

    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, websocket={"url": zeek.url, "max_message_bytes": 50_000,
                                                        "ping_interval_s": None})
        async with running(cfg) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(i) for i in range(100)])  # about 280 KB
            await wait_until(lambda: svc.metrics.value("multa_bridge_reconnects_total") == 1, what="reconnect")
            await wait_until(lambda: zeek.clients == 1)
            await zeek.send_flows([make_flow(200)])
            await wait_until(lambda: len(zeek.results()) == 1)
            m = svc.metrics
            assert m.value("multa_bridge_malformed_messages_total", reason="too_big") == 1
            balanced(svc)
        await zeek.stop()
    with caplog.at_level(logging.WARNING, logger="multa.bridge"):
        run(main())
    assert any("max_message_bytes (50000)" in r.getMessage() for r in caplog.records)


def test_default_max_message_bytes_is_what_the_docs_say():
    from multa_broker.bridge.config import BridgeConfig, default_yaml

    assert BridgeConfig().websocket.max_message_bytes == 16 * 1024 * 1024
    assert "max_message_bytes: 16777216" in default_yaml()
    docs = (Path(__file__).parents[1] / "docs" / "bridge.md").read_text()
    assert "| `websocket.max_message_bytes` | 16 MiB |" in docs


def test_peer_that_stops_reading_is_dropped_by_the_keepalive(model, caplog):
    """Issue 16 (2): with the send buffer full, websockets' own ping never went out and the
    bridge sat connected with a full queue. Our keepalive times out, aborts the connection,
    keeps the results it could not send, and reconnects; nothing is lost."""
    import logging

    async def main():
        zeek = await FakeZeek(rcvbuf=4096).start()
        cfg = bridge_config(zeek.url, model, websocket={"url": zeek.url, "ping_interval_s": 0.3,
                                                        "ping_timeout_s": 0.5})
        from multa_broker.bench.fakezeek import FlowTemplates

        # About 5 MB of results: more than the kernel buffers a stalled reader (about 3 MB here).
        templates = FlowTemplates([make_flow(i) for i in range(50)])
        async with running(cfg) as svc:
            m = svc.metrics
            await zeek.wait_subscribed()
            assert zeek.stop_reading() == 1
            for _ in range(40):
                await zeek.send_text("multa/flows", templates.message("multa/flows", "w", 500)[0])
            await wait_until(lambda: m.value("multa_bridge_reconnects_total") >= 1, 15,
                             "the keepalive to drop the stalled connection")
            await wait_until(lambda: m.value("multa_bridge_connected") == 1 and len(zeek.handshakes) == 2)
            after = [make_flow(i) for i in range(5000, 5010)]
            await zeek.send_flows(after)
            await wait_until(lambda: {f.uid for f in after} <= {r.uid for r in zeek.results()}, 10,
                             "results on the new connection")
            await wait_until(lambda: m.value("multa_bridge_pending_results") == 0)
            # The stalled connection took some results into its socket buffers (counted out:
            # delivery is at most once); those it could not take went out after the reconnect.
            assert len(zeek.results()) > len(after)
            balanced(svc)
            assert m.dropped() == 0
        await zeek.stop()
    with caplog.at_level(logging.WARNING, logger="multa.bridge"):
        run(main())
    assert any("keepalive: no pong" in r.getMessage() for r in caplog.records)


def test_backoff_does_not_reset_for_a_peer_that_acks_and_closes(model, caplog):
    """Issue 16 (8): a peer that acked and closed at once got 59 reconnects in 12 s (the backoff
    reset at every handshake) and two unthrottled log lines each."""
    import logging

    from websockets.asyncio.server import serve

    accepted = []

    async def flap(ws):
        await ws.recv()
        accepted.append(time.monotonic())
        await ws.send(json.dumps({"type": "ack", "endpoint": "e", "version": "8.0.10"}))
        await ws.close()

    async def main():
        server = await serve(flap, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = bridge_config(f"ws://127.0.0.1:{port}/v1/messages/json", model,
                            reconnect={"initial_s": 0.05, "max_s": 0.4, "multiplier": 2.0, "jitter": 0.0},
                            log_interval_s=10.0)
        async with running(cfg):
            await asyncio.sleep(2.0)
        server.close()

    with caplog.at_level(logging.INFO, logger="multa.bridge"):
        run(main())
    # 0.05 + 0.1 + 0.2 + 0.4 + 0.4 + ... : about 6 connections in 2 s, not 2 / 0.05 = 40.
    assert 3 <= len(accepted) <= 9, accepted
    gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    assert gaps[-1] >= 0.35, gaps
    msgs = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("connected to") for m in msgs) == 1, msgs
    assert sum(m.startswith("lost Zeek") for m in msgs) == 1, msgs


def test_backoff_resets_after_a_connection_that_lasted(model):
    from websockets.asyncio.server import serve

    accepted = []

    async def hold_then_close(ws):
        await ws.recv()
        accepted.append(time.monotonic())
        await ws.send(json.dumps({"type": "ack", "endpoint": "e", "version": "8.0.10"}))
        await asyncio.sleep(0.3)
        await ws.close()

    async def main():
        server = await serve(hold_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = bridge_config(f"ws://127.0.0.1:{port}/v1/messages/json", model,
                            reconnect={"initial_s": 0.05, "max_s": 5.0, "multiplier": 4.0, "jitter": 0.0,
                                       "reset_after_s": 0.2})
        async with running(cfg):
            await asyncio.sleep(2.0)
        server.close()

    run(main())
    gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    # Each connection lived 0.3 s >= reset_after_s: every wait is initial_s again.
    assert len(gaps) >= 3 and all(g < 0.3 + 0.05 + 0.2 for g in gaps), gaps
