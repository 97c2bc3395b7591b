"""A real Zeek cluster on one machine with the real bridge (issue 16).

Four Zeek processes, started without zeekctl from a ``cluster-layout.zeek``
written here (manager, proxy-1, worker-1, worker-2 on loopback ports), each
as ``CLUSTER_NODE=<name> zeek ...`` in its own directory, with
``Cluster::backend`` as shipped (Broker):

- the **manager** loads the package with ``Multa::listen_websocket = T``: it
  runs the WebSocket server the bridge connects to, and, as there is no
  logger, it also writes the cluster's logs;
- the **workers** each read one half of one capture (split by connection,
  below) with ``-r`` plus the package's ``offline.zeek``: a worker holds its
  trace until the manager tells it a bridge is connected
  (``Multa::bridge_status``), sends its flows with ``Cluster::publish`` through
  Broker to the manager and on to the bridge, and exits once every result
  came back to it;
- the **bridge** runs with ``topics.per_node: true`` and answers each flow on
  ``multa/results/<node>``; a second WebSocket client on the manager
  subscribes to ``multa/results`` and records which topic carried which uid.

Checked: each worker's own multa.log (workers log locally here as well as to
the manager) holds exactly the connections ``multa flows`` finds in its half
(5-tuple and start time), every result travelled on the topic of the worker
that owns the flow, the manager's multa.log holds both halves, and the bridge
counted every flow in and out with nothing dropped.

Skipped without a ``zeek`` binary on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from multa_broker.bench.loopback import free_port
from support.bridge import write_tiny_model

ZEEK = shutil.which("zeek")
pytestmark = [
    pytest.mark.zeek,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: the cluster test needs Zeek 8.0+"),
]

PACKAGE = REPO / "zeek_scripts"
CAPTURE = REPO / "examples" / "example.pcap"
WORKERS = ("worker-1", "worker-2")

LAYOUT = """\
redef Cluster::nodes = {{
	["manager"] = [$node_type=Cluster::MANAGER, $ip=127.0.0.1, $p={manager}/tcp],
	["proxy-1"] = [$node_type=Cluster::PROXY, $ip=127.0.0.1, $p={proxy}/tcp, $manager="manager"],
	["worker-1"] = [$node_type=Cluster::WORKER, $ip=127.0.0.1, $manager="manager"],
	["worker-2"] = [$node_type=Cluster::WORKER, $ip=127.0.0.1, $manager="manager"],
}};
"""

# Loaded on every node, like a site's local.zeek: the package's WebSocket
# server (only the manager, Multa::websocket_node's default, starts it), JSON
# logs, no rotation (Zeek's cluster scripts set 24 h rotation with a
# "delete-log" postprocessor when not supervised; off here so the logs stay
# where they were written), and workers also write their logs locally, so each
# worker's multa.log can be checked against its own half. Each node notes the
# backend it runs with and which nodes came up.
NODE_SCRIPT = """\
redef Multa::listen_websocket = T;
redef Multa::websocket_port = {ws}/tcp;
redef LogAscii::use_json = T;
redef Log::default_rotation_interval = 0 secs;

@if ( Cluster::local_node_type() == Cluster::WORKER )
redef Log::enable_local_logging = T;
@endif

global multa_cluster_notes = open("cluster-notes.txt");

event zeek_init()
	{{
	print multa_cluster_notes, fmt("node %s backend %s", Cluster::node, Cluster::backend);
	}}

event Cluster::node_up(name: string, id: string)
	{{
	print multa_cluster_notes, fmt("node_up %s", name);
	}}
"""


# --- Splitting one capture in two, by connection ----------------------------

def _conn_key(frame: bytes) -> tuple | None:
    """An order-independent key of the connection an Ethernet frame belongs to (None: not IP)."""
    off, et = 14, struct.unpack_from("!H", frame, 12)[0]
    while et in (0x8100, 0x88A8):
        et = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if et == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        proto, src, dst = frame[off + 9], frame[off + 12:off + 16], frame[off + 16:off + 20]
        l4 = off + ihl
    elif et == 0x86DD:
        proto, src, dst = frame[off + 6], frame[off + 8:off + 24], frame[off + 24:off + 40]
        l4 = off + 40
    else:
        return None
    if proto in (6, 17):
        sp, dp = struct.unpack_from("!HH", frame, l4)
        return (proto,) + tuple(sorted([(src, sp), (dst, dp)]))
    return (proto,) + tuple(sorted([src, dst]))


def split_capture(src: Path, halves: list[Path]) -> None:
    """Write each connection's packets to one of ``halves``, alternating by first appearance."""
    from multa_broker.capture.pcapwriter import pcap
    from multa_broker.capture.reader import open_capture

    owner: dict[tuple, int] = {}
    frames: list[list[tuple[float, bytes]]] = [[] for _ in halves]
    for ts, data, wirelen, linktype in open_capture(src):
        assert linktype == 1 and wirelen == len(data), "split_capture handles whole Ethernet frames only"
        key = _conn_key(data)
        assert key is not None, f"{src}: a frame that is not IP"
        i = owner.setdefault(key, len(owner) % len(halves))
        frames[i].append((ts, data))
    for path, fr in zip(halves, frames):
        path.write_bytes(pcap(fr, linktype=1))


# --- Processes ---------------------------------------------------------------

def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port} within {timeout}s")


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class ResultObserver(threading.Thread):
    """A WebSocket client on the manager subscribed to ``multa/results``: records
    the topic of every ``Multa::results`` or ``Multa::packed_results`` event and the
    uids it carried."""

    def __init__(self, url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
        super().__init__(daemon=True)
        from websockets.sync.client import connect

        # Retried until the manager's WebSocket server is up (a bare TCP probe
        # would make Zeek log an HTTP error).
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ws = connect(url, max_size=None, open_timeout=5)
                break
            except OSError:
                assert proc.poll() is None, f"the manager exited with {proc.returncode}"
                assert time.monotonic() < deadline, f"no WebSocket server at {url} within {timeout}s"
                time.sleep(0.1)
        self.ws.send(json.dumps(["multa/results"]))
        ack = json.loads(self.ws.recv(timeout=10))
        assert ack.get("type") == "ack", ack
        self.by_topic: dict[str, list[str]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                msg = json.loads(self.ws.recv(timeout=0.2))
            except TimeoutError:
                continue
            except Exception:
                return
            if msg.get("type") != "data-message":
                continue
            name, args = msg["data"][2]["data"][0]["data"], msg["data"][2]["data"][1]["data"]
            if name == "Multa::results":
                uids = [r["data"][0]["data"] for r in args[0]["data"]]
            elif name == "Multa::packed_results":  # the bridge's answer to packed flows
                uids = [r["uid"] for r in json.loads(args[1]["data"])]
            else:
                continue
            self.by_topic.setdefault(msg["topic"], []).extend(uids)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.ws.close()


def _read_json_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cluster_answers_every_flow_on_the_worker_that_owns_it(tmp_path):
    from multa_broker.capture import read_flows

    halves = [tmp_path / f"{w}.pcap" for w in WORKERS]
    split_capture(CAPTURE, halves)
    expected = {}
    for w, half in zip(WORKERS, halves):
        flows = list(read_flows(half, verify_checksums=False))
        expected[w] = {(f.key.tuple5, f.key.ts) for f in flows}
        assert flows, f"{half}: no flows"
    whole = list(read_flows(CAPTURE, verify_checksums=False))
    assert sum(len(v) for v in expected.values()) == len(whole), "the split lost or added connections"

    ports = {"manager": free_port(), "proxy": free_port(), "ws": free_port(), "metrics": free_port()}
    layout = LAYOUT.format(manager=ports["manager"], proxy=ports["proxy"])
    env_base = dict(os.environ)
    procs: dict[str, subprocess.Popen] = {}
    logs = []

    def start_node(name: str, args: list[str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "cluster-layout.zeek").write_text(layout)
        (d / "node.zeek").write_text(NODE_SCRIPT.format(ws=ports["ws"]))
        env = dict(env_base, CLUSTER_NODE=name)
        if env.get("ZEEKPATH"):
            env["ZEEKPATH"] = f"{d}:{env['ZEEKPATH']}"  # else "." (the node's directory) is on Zeek's default path
        out = open(d / "stdout.txt", "w")
        logs.append(out)
        procs[name] = subprocess.Popen([ZEEK, *args, str(PACKAGE), "node.zeek"], cwd=d, env=env,
                                       stdout=out, stderr=subprocess.STDOUT)
        return d

    model = write_tiny_model(tmp_path / "store" / "tiny" / "1")
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(yaml.safe_dump({
        "websocket": {"url": f"ws://127.0.0.1:{ports['ws']}/v1/messages/json"},
        "topics": {"per_node": True},
        "model": {"path": str(model), "poll_s": 0, "worker": "thread"},
        "metrics": {"enabled": True, "port": ports["metrics"]},
        "reconnect": {"initial_s": 0.1, "max_s": 0.5},
    }))
    observer = None
    bridge_err = ""
    try:
        mdir = start_node("manager", [])
        start_node("proxy-1", [])
        _wait_port(ports["manager"], procs["manager"], "the manager (Broker)")
        _wait_port(ports["proxy"], procs["proxy-1"], "the proxy (Broker)")
        observer = ResultObserver(f"ws://127.0.0.1:{ports['ws']}/v1/messages/json", procs["manager"])
        observer.start()
        bridge = subprocess.Popen([sys.executable, "-m", "multa_broker", "bridge", "-c", str(cfg)], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs["bridge"] = bridge
        _wait_port(ports["metrics"], bridge, "the bridge (metrics)")
        deadline = time.monotonic() + 60
        while _metrics(ports["metrics"]).get("multa_bridge_connected", 0) != 1:
            assert time.monotonic() < deadline, "the bridge did not connect to the manager"
            time.sleep(0.1)

        wdirs = {w: start_node(w, ["-C", "-r", str(h), str(PACKAGE / "offline.zeek")])
                 for w, h in zip(WORKERS, halves)}
        for w in WORKERS:
            rc = procs[w].wait(timeout=180)
            assert rc == 0, f"{w} exited {rc}: {(wdirs[w] / 'stdout.txt').read_text()[-2000:]}"
        time.sleep(1.0)  # the manager writes the workers' remote log records
        bridge_metrics = _metrics(ports["metrics"])
    finally:
        if observer is not None:
            observer.close()
        if "bridge" in procs:
            procs["bridge"].send_signal(signal.SIGTERM)
            try:
                _, bridge_err = procs["bridge"].communicate(timeout=30)
            except subprocess.TimeoutExpired:
                procs["bridge"].kill()
        for name, p in procs.items():
            if name != "bridge" and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()

    notes = (mdir / "cluster-notes.txt").read_text()
    assert "backend Cluster::CLUSTER_BACKEND_BROKER" in notes, notes
    assert all(f"node_up {w}" in notes for w in WORKERS), notes

    # 1. each worker logged exactly the connections of its own half, once each.
    counts = {}
    for w in WORKERS:
        d = tmp_path / w
        rows = _read_json_log(d / "multa.log")
        reporter = (d / "reporter.log").read_text() if (d / "reporter.log").exists() else ""
        assert "got no result" not in reporter and "gave up" not in reporter, reporter
        uids = [r["uid"] for r in rows]
        assert len(uids) == len(set(uids)), f"{w}: a connection was logged twice"
        # multa.log has no protocol column; the endpoints and start time tell connections apart here.
        got = {((r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"]), round(r["ts"], 6)) for r in rows}
        want = {(tuple5[1:], round(ts, 6)) for tuple5, ts in expected[w]}
        assert got == want, (f"{w}: multa.log differs from `multa flows` on its half: "
                             f"missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}")
        assert len(rows) == len(expected[w])
        counts[w] = len(rows)

    # 2. every result travelled on the topic of the worker that owns the flow.
    by_topic = {t: sorted(u) for t, u in observer.by_topic.items()}
    assert set(by_topic) == {f"multa/results/{w}" for w in WORKERS}, sorted(by_topic)
    for w in WORKERS:
        logged = sorted(r["uid"] for r in _read_json_log(tmp_path / w / "multa.log"))
        assert by_topic[f"multa/results/{w}"] == logged, f"{w}: results on its topic differ from its multa.log"

    # 3. the manager (the cluster's logger) holds both halves.
    manager_rows = _read_json_log(mdir / "multa.log")
    assert sorted(r["uid"] for r in manager_rows) == sorted(u for us in by_topic.values() for u in us)

    # 4. the bridge counted every flow in and out, dropped none.
    total = sum(counts.values())
    assert bridge_metrics["multa_bridge_flows_in_total"] == total, bridge_metrics
    assert bridge_metrics["multa_bridge_flows_out_total"] == total, bridge_metrics
    assert not any(k.startswith("multa_bridge_flows_dropped_total") and v for k, v in bridge_metrics.items())
    summary = [line for line in bridge_err.splitlines() if "stopped:" in line]
    assert summary and f"flows_in={total}" in summary[-1] and f"flows_out={total}" in summary[-1], bridge_err[-2000:]
    print(f"per-worker multa.log rows: {counts}; whole capture: {len(whole)} flows")
