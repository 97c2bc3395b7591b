"""Parity with a real Zeek: the extractor's per-connection counts against conn.log.

For each capture, ``zeek -r CAPTURE`` (with ``-C`` when checksums are
ignored) writes conn.log; its tcp/udp/icmp connections are joined with the
extractor's by (proto, orig_h, orig_p, resp_h, resp_p, start time in
microseconds) and ``orig_pkts``, ``resp_pkts``, ``orig_ip_bytes`` and
``resp_ip_bytes`` must be equal. Connections Zeek logs with no counted packet
are left out (the extractor makes no flow of them).

The tests skip unless ``zeek`` is on PATH (or at /opt/zeek/bin/zeek). Run the
helper over many captures with::

    python tests/test_capture_zeek_parity.py [--verify-checksums] CAPTURE_OR_DIR...
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from multa_broker.capture import CaptureError, read_connections
from multa_broker.capture.ports import LIKELY_SERVER_PORTS_TCP, LIKELY_SERVER_PORTS_UDP, parse_zeek_print

DATA = SHARED_DATA
COUNTS = ("orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes")


def zeek_binary() -> str | None:
    found = shutil.which("zeek")
    if found:
        return found
    cand = Path("/opt/zeek/bin/zeek")
    return str(cand) if cand.is_file() and os.access(cand, os.X_OK) else None


class ZeekFailed(RuntimeError):
    """zeek exited non-zero on a capture."""


def zeek_conns(capture: Path, *, ignore_checksums: bool, zeek: str) -> dict[tuple, dict]:
    """conn.log of ``zeek -r capture`` as {join key: row}."""
    with tempfile.TemporaryDirectory(prefix="multa-zeek-") as tmp:
        cmd = [zeek, "-r", str(Path(capture).resolve())]
        if ignore_checksums:
            cmd.append("-C")
        cmd.append("LogAscii::use_json=T")
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
        log = Path(tmp) / "conn.log"
        if proc.returncode != 0:
            # Unreadable or damaged capture: Zeek stops with a fatal error and
            # its conn.log (if any) misses the connections still open.
            raise ZeekFailed(f"{capture}: {proc.stderr.strip()[-300:]}")
        rows = {}
        if log.exists():
            for line in log.read_text().splitlines():
                r = json.loads(line)
                if r.get("proto") not in ("tcp", "udp", "icmp"):
                    continue
                if not (r.get("orig_pkts", 0) or r.get("resp_pkts", 0)):
                    continue
                key = (r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"],
                       round(r["ts"] * 1e6))
                rows[key] = r
        return rows


def zeek_likely_server_ports(zeek: str) -> tuple[frozenset[int], frozenset[int]]:
    """The likely_server_ports of this Zeek build (a build without Spicy lacks some)."""
    out = subprocess.run([zeek, "-e", "print likely_server_ports"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return parse_zeek_print(out)


def extractor_conns(capture: Path, *, verify_checksums: bool, ports=None) -> dict[tuple, dict]:
    out = {}
    try:
        for rec in read_connections(capture, verify_checksums=verify_checksums, likely_server_ports=ports):
            k = rec.flow.key
            out[(k.proto, k.orig_h, k.orig_p, k.resp_h, k.resp_p, round(k.ts * 1e6))] = {
                c: getattr(rec, c) for c in COUNTS}
    except CaptureError:
        pass  # keep what was read before the damage, as Zeek logs what it saw
    return out


@dataclass
class Parity:
    captures: int = 0
    matched: int = 0
    count_mismatch: list = field(default_factory=list)
    zeek_only: list = field(default_factory=list)
    ours_only: list = field(default_factory=list)
    captures_all_match: int = 0
    zeek_failed: list = field(default_factory=list)

    @property
    def zeek_total(self) -> int:
        return self.matched + len(self.count_mismatch) + len(self.zeek_only)

    def rate(self) -> float:
        return self.matched / self.zeek_total if self.zeek_total else 1.0


def compare(captures: list[Path], *, verify_checksums: bool, zeek: str) -> Parity:
    """Join conn.log with the extractor's connections for each capture.

    The extractor uses the likely_server_ports of the Zeek under test, so that a
    build without Spicy (missing the LDAP, PostgreSQL and Redis ports) is
    compared like with like.
    """
    p = Parity()
    ports = zeek_likely_server_ports(zeek)
    for cap in captures:
        try:
            z = zeek_conns(cap, ignore_checksums=not verify_checksums, zeek=zeek)
        except ZeekFailed as e:
            p.zeek_failed.append(str(e))
            continue
        o = extractor_conns(cap, verify_checksums=verify_checksums, ports=ports)
        p.captures += 1
        bad = 0
        for key, row in z.items():
            mine = o.get(key)
            if mine is None:
                p.zeek_only.append((str(cap), key, {c: row.get(c) for c in COUNTS}))
                bad += 1
            elif any(mine[c] != row.get(c) for c in COUNTS):
                p.count_mismatch.append((str(cap), key, {c: row.get(c) for c in COUNTS}, mine))
                bad += 1
            else:
                p.matched += 1
        for key in o.keys() - z.keys():
            p.ours_only.append((str(cap), key, o[key]))
            bad += 1
        p.captures_all_match += bad == 0
    return p


ZEEK = zeek_binary()
needs_zeek = pytest.mark.skipif(ZEEK is None, reason="zeek not found on PATH or at /opt/zeek/bin/zeek")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present (set MULTA_DATA)")

PINNED = [
    "zeek-traces/tunnels/Teredo.pcap", "zeek-traces/tunnels/ayiya3.pcap", "zeek-traces/tunnels/geneve.pcap",
    "zeek-traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap", "zeek-traces/tunnels/gre-aruba.pcap",
    "ndpi/pcap/wechat.pcap", "ndpi/pcap/anyconnect-vpn.pcap", "ndpi/pcap/dns.pcap",
    "ndpi/pcap/reasm_crash_anon.pcapng", "zeek-traces/radiotap.pcap", "zeek-traces/llc.pcap",
    "zeek-traces/http/get.pcap", "zeek-traces/http-vlan-0.pcap", "zeek-traces/http-qinq-0.pcap",
    "zeek-traces/dns53.pcap", "zeek-traces/icmp/icmp-ping.pcap", "zeek-traces/icmp/icmp6-ping.pcap",
    "zeek-traces/ipv6-fragmented-dns.pcap", "zeek-traces/tunnels/vxlan.pcap", "zeek-traces/tunnels/4in4.pcap",
    "zeek-traces/tunnels/gre-sample.pcap", "zeek-traces/wikipedia.pcap",
]


@needs_zeek
@needs_data
@pytest.mark.parametrize("verify", [False, True], ids=["zeek-C", "zeek-checksums"])
def test_counts_match_zeek_conn_log(verify):
    caps = [DATA / p for p in PINNED if (DATA / p).exists()]
    p = compare(caps, verify_checksums=verify, zeek=ZEEK)
    assert p.zeek_total > 0 and not p.zeek_failed
    assert not p.count_mismatch and not p.zeek_only and not p.ours_only, (
        p.count_mismatch[:5], p.zeek_only[:5], p.ours_only[:5])


@needs_zeek
def test_static_likely_server_ports_cover_this_zeek():
    tcp, udp = zeek_likely_server_ports(ZEEK)
    # A build without Spicy lacks only the Spicy analyzers' ports (ports.py).
    assert tcp <= LIKELY_SERVER_PORTS_TCP and udp <= LIKELY_SERVER_PORTS_UDP
    assert LIKELY_SERVER_PORTS_TCP - tcp <= {389, 3268, 5432, 6379} and LIKELY_SERVER_PORTS_UDP - udp <= {389}


def _expand(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for a in map(Path, args):
        out.extend(sorted(f for f in a.rglob("*") if f.is_file()) if a.is_dir() else [a])
    return out


def main(argv: list[str]) -> int:
    verify = "--verify-checksums" in argv
    args = [a for a in argv if a != "--verify-checksums"]
    zeek = zeek_binary()
    if zeek is None:
        print("zeek not found", file=sys.stderr)
        return 2
    caps = _expand(args)
    p = compare(caps, verify_checksums=verify, zeek=zeek)
    print(json.dumps({
        "captures": p.captures, "captures_all_match": p.captures_all_match, "zeek_connections": p.zeek_total,
        "matched": p.matched, "match_rate": round(p.rate(), 4), "count_mismatch": len(p.count_mismatch),
        "zeek_only": len(p.zeek_only), "extractor_only": len(p.ours_only), "zeek_failed": len(p.zeek_failed),
        "verify_checksums": verify}))
    for kind, rows in (("mismatch", p.count_mismatch), ("zeek_only", p.zeek_only), ("ours_only", p.ours_only),
                       ("zeek_failed", [(r,) for r in p.zeek_failed])):
        for row in rows[:200]:
            print(kind, *row, sep="\t")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
