"""Host context from a real Zeek (zeek_scripts/context.zeek) against its one definition.

Zeek runs the package with collection on and no bridge, and a test script
writes every flow it would send (``Multa::flow_policy``) and every connection
start it sees (``new_connection``: uid, ``start_time``, transport, roles).

- **Definition.** A :class:`multa_broker.context.ContextTracker` fed with
  Zeek's own starts, in Zeek's order, gives every flow's ``ctx`` exactly, on
  traces that reach the count cap (a SYN scan, a spoofed SYN flood), expire
  entries (a 10-minute trace) and have nothing to count; also with the
  forgetting sweep forced every few starts.
- **Extractor.** ``ctx`` equals what the offline extractor computes for the
  same connection (5-tuple and start), including a hand-made capture whose
  first packets are DNS responses, which Zeek's DNS analyzer flips at the
  first packet, before ``new_connection`` runs.
- ``Multa::host_context = F`` sends no ``ctx``; no per-uid state outlives its
  connection; both collectors send the same ``ctx``, and the plugin's C++
  tracker follows the definition too (with the plugin built).

Skipped without a ``zeek`` binary on PATH; the shared traces without the
capture corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA
from multa_broker import context
from multa_broker.capture import pcapwriter as pw

ZEEK = shutil.which("zeek")
pytestmark = [
    pytest.mark.zeek,
    pytest.mark.skipif(ZEEK is None, reason="no zeek binary on PATH: host context from Zeek needs Zeek 8.0+"),
]

PACKAGE = REPO / "zeek_scripts"
LAB_FIXTURES = REPO / "tests" / "fixtures" / "lab"
SEED = REPO / "tests" / "zeek" / "random.seed"
# Where zeek_plugin/build.sh puts the plugin (or MULTA_PLUGIN_DIR).
PLUGIN_DIR = Path(os.environ.get("MULTA_PLUGIN_DIR", REPO / "build"))

# Collect without a bridge; write what would be sent and every start.
DUMP_SCRIPT = """
redef Multa::pause_without_bridge = F;
global multa_ctx_sent = open("sent.jsonl");
global multa_ctx_starts = open("starts.txt");
hook Multa::flow_policy(f: Multa::Flow) &priority=-100
	{
	print multa_ctx_sent, to_json(f);
	}
event new_connection(c: connection) &priority=-100
	{
	print multa_ctx_starts, fmt("%s %.17g %s %s %s %d", c$uid, time_to_double(c$start_time),
	    get_port_transport_proto(c$id$resp_p), c$id$orig_h, c$id$resp_h, port_to_count(c$id$resp_p));
	}
module Multa;
event zeek_done() &priority=-100
	{
	print fmt("multa-context-left %d", |flow_context|);
	}
"""

# (path under the corpus, what it exercises)
SHARED_TRACES = {
    "ndpi/pcap/synscan.pcap": "orig_conns reaches the cap",
    "stopddos/pkt.TCP.synflood.spoofed.pcap": "resp_conns and resp_origs reach the cap",
    "stratosphere/test7-malicious.pcap": "642 s: entries expire",
    "stratosphere/test19-malicious-ssh/malicious-ssh-bruteforce.pcap": "orig_same, brute force",
    "stratosphere/test12-icmp-portscan.pcap": "ICMP",
    "stopddos/amp.UDP.isakmp.pcap": "UDP reflection",
    "zeek-traces/wikipedia.pcap": "ordinary browsing",
    "zeek-traces/tunnels/Teredo.pcap": "tunnelled connections",
}
LAB_TRACES = ("scan-syn-s5.pcap", "http-s5.pcap")


def run_zeek(capture: Path, workdir: Path, *extra: str, env: dict | None = None) -> tuple[list, list, int]:
    """Zeek on *capture*: (flows it would send, its starts, per-uid contexts left at zeek_done)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dump.zeek").write_text(DUMP_SCRIPT)
    proc = subprocess.run([ZEEK, "-C", "-r", str(Path(capture).resolve()), str(PACKAGE), "dump.zeek", *extra],
                          cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ZEEK_SEED_FILE": str(SEED), **(env or {})})
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = [json.loads(line) for line in (workdir / "sent.jsonl").read_text().splitlines()]
    starts = [line.split() for line in (workdir / "starts.txt").read_text().splitlines()]
    left = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("multa-context-left")]
    return sent, starts, left[0]


def definition(starts: list) -> dict[str, tuple[int, ...]]:
    """context.py's contexts for Zeek's starts, by uid (TCP, UDP and ICMP only, as in the package)."""
    tracker = context.ContextTracker()
    return {uid: tracker.start(float(ts), proto, oh, rh, int(rp))
            for uid, ts, proto, oh, rh, rp in starts if proto != "unknown_transport"}


def flow_key(proto: str, orig_h: str, orig_p: int, resp_h: str, resp_p: int, ts: float) -> tuple:
    return (proto, orig_h, orig_p, resp_h, resp_p, round(ts * 1e6))


def sent_key(f: dict) -> tuple:
    """Join key of a flow as Zeek's to_json writes it."""
    return flow_key(f["orig_p"]["proto"], f["orig_h"], f["orig_p"]["port"], f["resp_h"], f["resp_p"]["port"], f["ts"])


def extractor_contexts(capture: Path) -> dict[tuple, tuple[int, ...] | None]:
    from multa_broker.capture import read_flows

    out = {}
    for fl in read_flows(capture, verify_checksums=False):
        k = fl.key
        out[flow_key(k.proto, k.orig_h, k.orig_p, k.resp_h, k.resp_p, k.ts)] = fl.ctx
    return out


def dns_flip_capture(path: Path) -> Path:
    """Two connections whose first packet is a DNS response (53->53, 5353->5353): neither port
    tells Zeek the roles, its DNS analyzer flips them at that packet. Around them, starts
    from both addresses, so that the context differs by orientation."""

    def dns(response: bool) -> bytes:
        question = b"\x01a\x01b\x00\x00\x01\x00\x01"
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04" if response else b""
        return struct.pack("!HHHHHH", 0x1234, 0x8180 if response else 0x0100, 1, int(response), 0, 0) + \
            question + answer

    segments = [pw.udp("10.0.0.1", 40000 + i, "10.0.0.9", 7000 + i, b"x" * 10) for i in range(3)]
    segments += [pw.udp("10.0.0.1", 53, "10.0.0.2", 53, dns(True)),
                 pw.udp("10.0.0.1", 5353, "10.0.0.3", 5353, dns(True))]
    segments += [pw.udp("10.0.0.2", 41000 + i, "10.0.0.8", 9000, b"y" * 10) for i in range(2)]
    segments += [pw.udp("10.0.0.2", 53, "10.0.0.1", 53, dns(False))]
    path.write_bytes(pw.pcap((1000.0 + i / 10, pw.ether(pw.ip(s))) for i, s in enumerate(segments)))
    return path


def _traces() -> list:
    out = [pytest.param(LAB_FIXTURES / name, id=name) for name in LAB_TRACES]
    out += [pytest.param(SHARED_DATA / rel, id=rel) for rel in SHARED_TRACES]
    return out


def _need(capture: Path) -> None:
    if not capture.exists():
        pytest.skip(f"{capture} not found (set MULTA_DATA)")


def test_constants_are_the_definitions() -> None:
    # Also pinned without Zeek by test_zeek_scripts; here Zeek's own value.
    out = subprocess.run([ZEEK, "-b", str(PACKAGE), "-e",
                          "event zeek_init() { print interval_to_double(Multa::host_context_window), "
                          "Multa::host_context_max_entries, Multa::host_context; }"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "MULTA_COLLECTOR": "scripts"})
    assert out.stdout.split() == [f"{context.WINDOW_S},", f"{context.MAX_ENTRIES},", "T"], out.stderr


@pytest.mark.parametrize("capture", _traces())
def test_context_follows_the_definition(capture: Path, tmp_path: Path) -> None:
    _need(capture)
    sent, starts, left = run_zeek(capture, tmp_path)
    want = definition(starts)
    assert sent and all("ctx" in f for f in sent)
    wrong = [(f["uid"], f["ctx"], want.get(f["uid"])) for f in sent if tuple(f["ctx"]) != want.get(f["uid"])]
    assert not wrong, f"{len(wrong)} of {len(sent)} flows: {wrong[:5]}"
    assert left == 0, f"{left} per-uid contexts outlived their connections"
    if capture.name in ("scan-syn-s5.pcap", "synscan.pcap", "pkt.TCP.synflood.spoofed.pcap"):
        assert max(max(f["ctx"]) for f in sent) >= 100, "a scan or flood should have large counts"
    if capture.name in ("synscan.pcap", "pkt.TCP.synflood.spoofed.pcap"):
        assert max(max(f["ctx"]) for f in sent) == context.MAX_ENTRIES


def test_sweep_changes_no_result(tmp_path: Path) -> None:
    capture = SHARED_DATA / "stratosphere/test7-malicious.pcap"
    _need(capture)
    # The non-exported constant, redefined from inside the module.
    sent, starts, _ = run_zeek(capture, tmp_path, "-e", "module Multa; redef SWEEP_EVERY = 7;")
    want = definition(starts)
    assert sent and all(tuple(f["ctx"]) == want[f["uid"]] for f in sent)


@pytest.mark.parametrize("capture", [*_traces(), pytest.param(None, id="dns-first-packet-flip")])
def test_context_equals_the_extractors(capture: Path | None, tmp_path: Path) -> None:
    if capture is None:
        capture = dns_flip_capture(tmp_path / "dns-flip.pcap")
    _need(capture)
    offline = extractor_contexts(capture)
    if all(v is None for v in offline.values()):
        pytest.skip("the offline extractor computes no host context yet")
    sent, _, _ = run_zeek(capture, tmp_path / "zeek")
    zeek = {sent_key(f): tuple(f["ctx"]) for f in sent}
    assert zeek.keys() == offline.keys()
    wrong = [(k, zeek[k], offline[k]) for k in zeek if zeek[k] != offline[k]]
    assert not wrong, f"{len(wrong)} of {len(zeek)} flows differ (key, Zeek, extractor): {wrong[:5]}"


def test_context_off_sends_none(tmp_path: Path) -> None:
    sent, _, left = run_zeek(LAB_FIXTURES / "scan-syn-s5.pcap", tmp_path, "Multa::host_context=F")
    assert sent and not any("ctx" in f for f in sent) and left == 0


def test_paused_collection_leaves_no_state(tmp_path: Path) -> None:
    # No bridge and pausing on: nothing is sent, every start's context is dropped at its end.
    sent, starts, left = run_zeek(LAB_FIXTURES / "scan-syn-s5.pcap", tmp_path, "Multa::pause_without_bridge=T")
    assert not sent and len(starts) == 178 and left == 0


needs_plugin = pytest.mark.skipif(
    not (PLUGIN_DIR / "__zeek_plugin__").is_file(),
    reason=f"no Multa::Collector plugin in {PLUGIN_DIR} (zeek_plugin/build.sh, or MULTA_PLUGIN_DIR)")
PLUGIN_ENV = {"ZEEK_PLUGIN_PATH": str(PLUGIN_DIR), "ZEEK_PLUGIN_ACTIVATE": "Multa::Collector"}


@needs_plugin
@pytest.mark.parametrize("capture", _traces())
def test_plugin_context_follows_the_definition(capture: Path, tmp_path: Path) -> None:
    # Where the plugin collects, its C++ tracker computes the context.
    _need(capture)
    sent, starts, left = run_zeek(capture, tmp_path, "-e",
                                  "module Multa; event zeek_init() { if ( ! plugin_context ) exit(3); }", env=PLUGIN_ENV)
    want = definition(starts)
    wrong = [(f["uid"], f["ctx"], want.get(f["uid"])) for f in sent if tuple(f["ctx"]) != want.get(f["uid"])]
    assert sent and not wrong, f"{len(wrong)} of {len(sent)} flows: {wrong[:5]}"
    assert left == 0


@needs_plugin
def test_plugin_context_off(tmp_path: Path) -> None:
    sent, _, _ = run_zeek(LAB_FIXTURES / "scan-syn-s5.pcap", tmp_path, "Multa::host_context=F", env=PLUGIN_ENV)
    assert sent and not any("ctx" in f for f in sent)


@needs_plugin
@pytest.mark.parametrize("capture", [LAB_FIXTURES / "scan-syn-s5.pcap", LAB_FIXTURES / "http-s5.pcap",
                                     SHARED_DATA / "stratosphere/test7-malicious.pcap",
                                     SHARED_DATA / "ndpi/pcap/synscan.pcap"], ids=lambda p: p.name)
def test_both_collectors_send_the_same_context(capture: Path, tmp_path: Path) -> None:
    _need(capture)
    env = PLUGIN_ENV
    plugin, _, left_p = run_zeek(capture, tmp_path / "plugin", "-e",
                                 "event zeek_init() { if ( ! Multa::plugin_collects ) exit(3); }", env=env)
    scripts, _, left_s = run_zeek(capture, tmp_path / "scripts", env={**env, "MULTA_COLLECTOR": "scripts"})
    assert plugin and {f["uid"]: f["ctx"] for f in plugin} == {f["uid"]: f["ctx"] for f in scripts}
    assert left_p == left_s == 0


def test_cluster_split_keeps_host_pairs_and_lowers_counts(tmp_path: Path) -> None:
    # multa bench cluster-context: two workers, split by address pair, against one node.
    from multa_broker.bench import cluster_context as cc
    from multa_broker.capture.reader import open_capture

    capture = LAB_FIXTURES / "http-s5.pcap"
    parts = [tmp_path / "a.pcap", tmp_path / "b.pcap"]
    frames = cc.split(capture, parts)
    assert all(frames) and sum(frames) == sum(1 for _ in open_capture(capture))
    pairs = [{cc.address_pair(data) for _, data, _, _ in open_capture(p)} for p in parts]
    assert not pairs[0] & pairs[1]
    one = cc.zeek_flows(ZEEK, capture, tmp_path / "one")
    workers = {**cc.zeek_flows(ZEEK, parts[0], tmp_path / "w0"), **cc.zeek_flows(ZEEK, parts[1], tmp_path / "w1")}
    assert one.keys() == workers.keys()
    # No ring is full here: every count is a lower bound; a host pair's own count is exact.
    assert all(w <= o for k in one for w, o in zip(workers[k], one[k]))
    assert all(workers[k][3] == one[k][3] for k in one)
    figures = cc.compare(one, workers)
    assert figures["flows"] == len(one) and figures["ctx_equal_share"] < 1.0
    assert figures["per_count"]["orig_same"]["kept"] == 1.0
