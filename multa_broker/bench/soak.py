"""``multa bench soak``: the real bridge for a bounded time under steady load and injected faults.

The bridge runs as its own process (``multa bridge``, as deployed). This process
plays Zeek (:class:`~multa_broker.bench.fakezeek.FakeZeek`): it offers
``--rate`` flows/s in messages of ``--flows-per-message`` and, every
``--fault-every`` seconds, injects the next fault of ``--faults`` in turn:

* ``restart`` -- Zeek goes away and comes back on the same port a second later;
* ``garbage`` -- a message that is not JSON, one nested 500 deep, and a flows
  message whose middle record has an out-of-range timestamp;
* ``oversized`` -- a message over the bridge's ``websocket.max_message_bytes``
  (1 MiB here): counted ``too_big``, the connection closes, the bridge reconnects;
* ``stall`` -- Zeek stops reading from the bridge (pings unanswered, buffers
  fill) until the bridge's keepalive drops the connection and reconnects.

At the end (load stopped, bridge idle) it reports the bridge's RSS (with its
model worker) at start, end and maximum, drops by reason, malformed messages by
reason, reconnects, and whether ``flows_in = flows_out + dropped`` holds; then
SIGTERM, and the bridge must exit 0. Exit status 1 if the balance or the exit
code is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from multa_broker.bench.loopback import free_port
from multa_broker.errors import MultaError

TOPIC = "multa/flows"
FAULTS = ("restart", "garbage", "oversized", "stall")
MAX_DURATION_S = 4 * 3600.0
MAX_MESSAGE = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0,
                        help=f"seconds of load and faults (default 60, at most {MAX_DURATION_S:g}); "
                             "the issue's soak is --duration 1800")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered flows/s (default 1000)")
    parser.add_argument("--flows-per-message", type=int, default=100, help="flows per Multa::flows event")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between faults (default 10)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated faults to cycle through (default {','.join(FAULTS)})")
    parser.add_argument("--model", help="stored model to serve (default: an untrained LMMoE of the default size)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON here")


class _Zeek:
    """The current fake Zeek (a restart replaces it) and what it sent and got back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Any = None
        self.sent = 0
        self.answered = 0

    def _on_results(self, rec: Any) -> None:
        self.answered += len(rec.results)

    async def start(self) -> None:
        from multa_broker.bench.fakezeek import FakeZeek

        self.server = await FakeZeek(port=self.port, keep=False, on_results=self._on_results).start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def send(self, text: str, flows: int) -> None:
        if self.server is not None and await self.server.send_text(TOPIC, text):
            self.sent += flows


def _garbage(templates: Any) -> list[str]:
    from multa_broker.bench.fakezeek import flow_record_json, flows_message_text
    from multa_broker.bench.bridge import _template_flows

    deep = '{"@data-type":"vector","data":[' * 500 + '{"@data-type":"count","data":1}' + "]}" * 500
    recs = [flow_record_json(f) for f in _template_flows(3, 20)]
    for i, r in enumerate(recs):
        r["data"][0]["data"] = f"G{time.monotonic_ns()}x{i}"
    recs[1]["data"][5]["data"] = "9999-12-31T23:59:59-01:00"
    return ["this is not JSON", flows_message_text(TOPIC, "soak", deep),
            flows_message_text(TOPIC, "soak", ",".join(json.dumps(r) for r in recs))]


async def _soak(args: argparse.Namespace, model: str, tmp: Path) -> dict[str, Any]:
    import yaml

    from multa_broker.bench.bridge import Generator, _rss_mib, _scrape, _stop, _template_flows
    from multa_broker.bench.fakezeek import FlowTemplates, flows_message_text

    import logging

    logging.getLogger("websockets").setLevel(logging.WARNING)  # our fake Zeek's connection chatter
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise MultaError(f"--faults: unknown {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
    zeek = _Zeek(free_port())
    await zeek.start()
    templates = FlowTemplates(_template_flows(512, 20), uid_prefix="S")
    mport = free_port()
    cfg = {
        "websocket": {"url": zeek.server.url, "ping_interval_s": 1.0, "ping_timeout_s": 2.0,
                      "max_message_bytes": MAX_MESSAGE},
        "model": {"path": model, "poll_s": 0},
        "reconnect": {"initial_s": 0.2, "max_s": 2.0, "reset_after_s": 5.0},
        "metrics": {"enabled": True, "port": mport},
        "log_interval_s": 5.0,
    }
    (tmp / "soak.yaml").write_text(yaml.safe_dump(cfg))
    # The bridge's log goes to a file: a pipe nobody reads would stall a long soak.
    log_path = tmp / "bridge.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "multa_broker", "bridge", "-c", str(tmp / "soak.yaml")],
                                stdout=subprocess.DEVNULL, stderr=log_file)
    injected = {f: 0 for f in faults}
    rss: list[tuple[float, float]] = []
    out: dict[str, Any] = {}
    try:
        await zeek.server.wait_subscribed(120)
        t0 = time.monotonic()
        end = t0 + args.duration
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                rss.append((round(time.monotonic() - t0, 1), round(_rss_mib(proc.pid), 1)))
                await asyncio.sleep(1.0)

        async def load() -> None:
            interval = args.flows_per_message / args.rate
            next_t = time.monotonic()
            while time.monotonic() < end:
                now = time.monotonic()
                if now < next_t:
                    await asyncio.sleep(next_t - now)
                    continue
                text, uids = templates.message(TOPIC, "worker-1", args.flows_per_message)
                await zeek.send(text, len(uids))
                next_t = max(next_t + interval, now - 1.0)

        async def inject(kind: str) -> None:
            if kind == "restart":
                await zeek.stop()
                await asyncio.sleep(1.0)
                await zeek.start()
            elif kind == "garbage" and zeek.server is not None:
                for text in _garbage(templates):
                    await zeek.server.send_raw(text)
                zeek.sent += 3
            elif kind == "oversized" and zeek.server is not None:
                await zeek.server.send_raw(flows_message_text(TOPIC, "x" * (MAX_MESSAGE + 1000), ""))
            elif kind == "stall" and zeek.server is not None:
                before = (await asyncio.to_thread(_scrape, mport)).get("multa_bridge_reconnects_total", 0.0)
                zeek.server.stop_reading()
                for _ in range(100):  # the keepalive (1 s + 2 s) should drop it well within 10 s
                    await asyncio.sleep(0.1)
                    m = await asyncio.to_thread(_scrape, mport)
                    if m.get("multa_bridge_reconnects_total", 0.0) > before:
                        break
            injected[kind] += 1

        tasks = [asyncio.create_task(sample()), asyncio.create_task(load())]
        i = 0
        while faults and time.monotonic() + args.fault_every < end:
            await asyncio.sleep(args.fault_every)
            await inject(faults[i % len(faults)])
            i += 1
        await tasks[1]
        # Idle: everything received is answered or dropped (in = out + dropped).
        m: dict[str, float] = {}
        for _ in range(300):
            await asyncio.sleep(0.1)
            m = await asyncio.to_thread(_scrape, mport)
            if m.get("multa_bridge_queue_depth", 1) == 0 and m.get("multa_bridge_pending_results", 1) == 0 \
                    and _balance(m)[0] == _balance(m)[1]:
                break
        stop.set()
        await tasks[0]
        fin, accounted = _balance(m)
        out = {
            "duration_s": round(time.monotonic() - t0, 1),
            "faults_injected": injected,
            "rss_mib": {"start": rss[0][1] if rss else None, "end": rss[-1][1] if rss else None,
                        "max": max((r for _, r in rss), default=None)},
            "zeek_sent_flows": zeek.sent, "zeek_got_results": zeek.answered,
            "flows_in": fin, "flows_out": m.get("multa_bridge_flows_out_total", 0.0),
            "dropped": _by(m, "multa_bridge_flows_dropped_total", "reason"),
            "malformed": _by(m, "multa_bridge_malformed_messages_total", "reason"),
            "reconnects": m.get("multa_bridge_reconnects_total", 0.0),
            "connect_failures": m.get("multa_bridge_connect_failures_total", 0.0),
            "balanced": fin == accounted,
            "rss_samples": rss,
        }
    finally:
        _stop(proc)
        await zeek.stop()
    out["bridge_exit_code"] = proc.returncode
    lines = log_path.read_text(errors="replace").splitlines()
    out["bridge_log_lines"] = len(lines)
    out["bridge_log_warnings"] = sum(" WARNING " in x or " ERROR " in x for x in lines)
    if proc.returncode != 0:
        out["bridge_log_tail"] = lines[-10:]
    return out


def _by(m: dict[str, float], name: str, label: str) -> dict[str, float]:
    pre = name + "{" + label + "="
    return {k[len(pre):-1]: v for k, v in m.items() if k.startswith(pre) and v}


def _balance(m: dict[str, float]) -> tuple[float, float]:
    """(flows_in, flows_out + dropped)."""
    return (m.get("multa_bridge_flows_in_total", 0.0),
            m.get("multa_bridge_flows_out_total", 0.0) + sum(_by(m, "multa_bridge_flows_dropped_total",
                                                                 "reason").values()))


def run(args: argparse.Namespace) -> int:
    if not 0 < args.duration <= MAX_DURATION_S:
        raise MultaError(f"--duration must be within (0, {MAX_DURATION_S:g}] seconds")
    if args.rate <= 0 or args.flows_per_message < 1 or args.fault_every <= 0:
        raise MultaError("--rate, --flows-per-message and --fault-every must be positive")
    with tempfile.TemporaryDirectory(prefix="multa-soak-") as d:
        tmp = Path(d)
        if args.model:
            model = args.model
        else:
            from multa_broker.bench.bridge import _bench_model

            model = _bench_model(tmp)
        doc = asyncio.run(_soak(args, model, tmp))
    ok = doc["balanced"] and doc["bridge_exit_code"] == 0
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0 if ok else 1
    r = doc["rss_mib"]
    print(f"multa bench soak: {doc['duration_s']:g} s at {args.rate:g} flows/s offered "
          f"({args.flows_per_message} per message), a fault every {args.fault_every:g} s")
    print("  faults injected:      " + ", ".join(f"{k}={v}" for k, v in doc["faults_injected"].items()))
    print(f"  RSS bridge+worker:    start {r['start']} MiB, end {r['end']} MiB, max {r['max']} MiB")
    print(f"  Zeek sent {doc['zeek_sent_flows']:,} flows, got {doc['zeek_got_results']:,} results")
    print(f"  bridge: in {doc['flows_in']:,.0f}, out {doc['flows_out']:,.0f}, dropped "
          + (", ".join(f"{k}={v:,.0f}" for k, v in doc["dropped"].items()) or "none"))
    print("  malformed messages:   " + (", ".join(f"{k}={v:,.0f}" for k, v in doc["malformed"].items()) or "none"))
    print(f"  reconnects {doc['reconnects']:.0f}, connect failures {doc['connect_failures']:.0f}")
    print(f"  bridge log: {doc['bridge_log_lines']} lines, {doc['bridge_log_warnings']} warnings/errors")
    print(f"  in = out + dropped:   {'yes' if doc['balanced'] else 'NO'}; bridge exit code {doc['bridge_exit_code']}")
    if doc.get("bridge_log_tail"):
        print("  bridge log tail:\n    " + "\n    ".join(doc["bridge_log_tail"]))
    return 0 if ok else 1
