"""The native transport against real Broker endpoints (Debian's python3-broker 1.4).

A Broker endpoint in the test plays Zeek: it listens, publishes
``Multa::flows`` with Zeek's types (count, port, addr, time) and subscribes to
the results. Skipped when Broker's Python bindings are not installed
(``apt-get install python3-broker``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import sys
from pathlib import Path

import pytest

from multa_broker.bench.fakezeek import flow_values, flows_event_values, packed_flows_event_values
from multa_broker.bridge import codec
from multa_broker.protocol import (FLOWS_EVENT, PACKED_FLOWS_EVENT, PACKED_RESULT_VERSION, PACKED_RESULTS_EVENT,
                                   RESULTS_EVENT, Port)

from support.bridge import bridge_config, expected_labels, make_flow, running, wait_until, write_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DEBIAN_BROKER = "/usr/lib/python3/dist-packages"


def _broker():
    if DEBIAN_BROKER not in sys.path:
        sys.path.append(DEBIAN_BROKER)
    try:
        import broker
    except ImportError as e:
        pytest.skip(f"Broker's Python bindings are not installed (apt-get install python3-broker): {e}")
    return broker


@pytest.fixture
def broker():
    return _broker()


def _native_cfg(port: int, model: Path, **over):
    return bridge_config("ws://unused:1/v1/messages/json", model, transport="native",
                         native={"host": "127.0.0.1", "port": port, "python_path": DEBIAN_BROKER}, **over)


class ZeekEndpoint:
    """A Broker endpoint playing Zeek's side of the contract."""

    def __init__(self, broker, port: int = 0) -> None:
        self.b = broker
        self.ep = broker.Endpoint()
        self.results = self.ep.make_subscriber("multa/results")
        self.status = self.ep.make_status_subscriber(True)
        self.port = self.ep.listen("127.0.0.1", port)
        assert self.port, "listen failed"

    async def wait_peer(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while loop.time() < end:
            if self.ep.peers():
                await asyncio.sleep(0.3)  # let the bridge's subscription reach us
                return
            await asyncio.sleep(0.02)
        raise AssertionError("bridge never peered")

    def publish_flows(self, flows, node="worker-1", topic="multa/flows", packed=False) -> None:
        from multa_broker.bridge.native import from_values

        if packed:
            args = from_values(self.b, packed_flows_event_values(node, flows))
            self.ep.publish(topic, self.b.zeek.Event(PACKED_FLOWS_EVENT, *args))
        else:
            args = from_values(self.b, flows_event_values(node, flows))
            self.ep.publish(topic, self.b.zeek.Event(FLOWS_EVENT, *args))

    async def collect(self, n: int, timeout: float = 10.0, event: str = RESULTS_EVENT) -> list[tuple]:
        got: list[tuple] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(got) < n and loop.time() < end:
            for topic, data in self.results.poll():
                ev = self.b.zeek.Event(data)
                assert ev.name() == event
                if event == PACKED_RESULTS_EVENT:
                    version, text = ev.args()
                    assert isinstance(version, self.b.Count) and version.value == PACKED_RESULT_VERSION
                    got.extend((r["uid"], r["model"], tuple(r["tasks"]), tuple(r["labels"]), tuple(r["scores"]))
                               for r in json.loads(text))
                else:
                    got.extend(ev.args()[0])
            await asyncio.sleep(0.02)
        return got

    def shutdown(self) -> None:
        self.ep.shutdown()


def test_flows_and_results_over_real_broker(broker, tmp_path):
    model = write_tiny_model(tmp_path / "m")

    async def main():
        zeek = ZeekEndpoint(broker)
        flows = [make_flow(i, proto="udp" if i % 2 else "tcp") for i in range(50)]
        async with running(_native_cfg(zeek.port, model)) as svc:
            await zeek.wait_peer()
            zeek.publish_flows(flows[:30])
            zeek.publish_flows(flows[30:])
            got = await zeek.collect(50)
            assert len(got) == 50
            by_uid = {r[0]: r for r in got}
            for f in flows:
                uid, model_name, tasks, labels, scores = by_uid[f.uid]
                assert model_name == "tiny/1" and tasks == ("service", "encrypted")
                assert dict(zip(tasks, labels)) == expected_labels(f)
                assert all(type(s) is float for s in scores)  # Broker real, as Zeek's double needs
            assert svc.metrics.value("multa_bridge_flows_out_total") == 50
        zeek.shutdown()
    asyncio.run(asyncio.wait_for(main(), 60))


def test_packed_flows_get_packed_results_over_real_broker(broker, tmp_path):
    model = write_tiny_model(tmp_path / "m")

    async def main():
        zeek = ZeekEndpoint(broker)
        flows = [make_flow(i) for i in range(20)]
        async with running(_native_cfg(zeek.port, model)):
            await zeek.wait_peer()
            zeek.publish_flows(flows, packed=True)
            got = await zeek.collect(20, event=PACKED_RESULTS_EVENT)
        zeek.shutdown()
        return flows, got

    flows, got = asyncio.run(asyncio.wait_for(main(), 60))
    by_uid = {r[0]: r for r in got}
    assert len(by_uid) == 20
    for f in flows:
        uid, model_name, tasks, labels, scores = by_uid[f.uid]
        assert model_name == "tiny/1" and dict(zip(tasks, labels)) == expected_labels(f)


def test_bad_flows_and_foreign_events_over_broker(broker, tmp_path):
    model = write_tiny_model(tmp_path / "m")

    async def main():
        zeek = ZeekEndpoint(broker)
        async with running(_native_cfg(zeek.port, model)) as svc:
            await zeek.wait_peer()
            good = make_flow(1)
            bad = list(flow_values(make_flow(2)))
            bad[6] = tuple(int(s) for s in bad[6])  # sizes as integer, not count
            from multa_broker.bridge.native import from_values

            args = from_values(broker, ["w", (flow_values(good), tuple(bad))])
            zeek.ep.publish("multa/flows", broker.zeek.Event(FLOWS_EVENT, *args))
            zeek.ep.publish("multa/flows", broker.zeek.Event("Other::thing", 1))
            zeek.ep.publish("multa/flows", broker.Data(5))
            got = await zeek.collect(1)
            assert [r[0] for r in got] == [good.uid]
            await wait_until(lambda: svc.metrics.value("multa_bridge_malformed_messages_total",
                                                       reason="not_an_event") == 1)
            m = svc.metrics
            assert m.dropped("invalid") == 1 and m.value("multa_bridge_flows_in_total") == 2
            assert m.value("multa_bridge_malformed_messages_total", reason="unexpected_event") == 1
        zeek.shutdown()
    asyncio.run(asyncio.wait_for(main(), 60))


def test_reconnects_after_broker_peer_restart(broker, tmp_path):
    model = write_tiny_model(tmp_path / "m")

    async def main():
        zeek = ZeekEndpoint(broker)
        port = zeek.port
        async with running(_native_cfg(zeek.port, model)) as svc:
            await zeek.wait_peer()
            zeek.publish_flows([make_flow(1)])
            assert len(await zeek.collect(1)) == 1
            zeek.shutdown()
            await wait_until(lambda: svc.metrics.value("multa_bridge_connected") == 0, 10, "peer lost")
            zeek = ZeekEndpoint(broker, port)
            await wait_until(lambda: svc.metrics.value("multa_bridge_reconnects_total") == 1, 10, "reconnect")
            await zeek.wait_peer()
            zeek.publish_flows([make_flow(2)])
            got = await zeek.collect(1)
            assert [r[0] for r in got] == [make_flow(2).uid]
        zeek.shutdown()
    asyncio.run(asyncio.wait_for(main(), 60))


def test_every_contract_type_survives_brokers_own_encoding(broker):
    """codec values -> Broker's bindings -> Broker wire -> bindings -> codec values, unchanged."""
    from multa_broker.bridge.native import from_values, to_values

    value = ("s", codec.Count(7), -3, 2.5, True, None, ipaddress.ip_address("2001:db8::1"),
             ipaddress.ip_network("10.0.0.0/8"), Port(53, "udp"), Port(443, "tcp"), Port(8, "icmp"),
             dt.datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=dt.timezone.utc), dt.timedelta(milliseconds=1500),
             (codec.Count(1), codec.Count(2)), frozenset({"a", "b"}), {"k": codec.Count(1)},
             codec.EnumValue("Notice::ACTION_LOG"))
    a, b = broker.Endpoint(), broker.Endpoint()
    port = a.listen("127.0.0.1", 0)
    sub = a.make_subscriber("t")
    assert b.peer("127.0.0.1", port, 0)
    import time

    time.sleep(0.3)
    b.publish("t", broker.zeek.Event("E", from_values(broker, value)))
    _, data = sub.get(5.0)
    back = to_values(broker, broker.zeek.Event(data).args()[0])
    assert back == value
    assert [type(x) for x in back] == [type(x) for x in value]
    b.shutdown()
    a.shutdown()
