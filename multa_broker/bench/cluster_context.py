"""``multa bench cluster-context``: what splitting traffic over Zeek workers does to host context.

Zeek's cluster load balancing (a NIC's symmetric hash, AF_PACKET fanout)
keeps the packets of one host *pair* on one worker, not those of one host, so
each worker counts only its share of a host's connections. This splits each
capture by a hash of its packets' sorted outer address pair into ``--workers``
parts, as such a balancer would, runs Zeek with the multa package on the whole
capture (one node) and on each part (one worker each), and compares every
flow's ``ctx`` (joined by 5-tuple and start time) with the one-node value:

- the share of flows whose ``ctx`` is unchanged;
- per count, the sum over flows on the workers against one node (how much of
  it the workers see), and the share of flows where it is lower;
- flows whose count is higher on a worker (possible only where a ring was
  full on one node: a worker's last 1,000 starts reach further back).

Needs ``zeek`` on PATH; Ethernet captures only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

from multa_broker.context import FEATURES
from multa_broker.errors import MultaError
from multa_broker.resources import zeek_scripts

_VLAN = (0x8100, 0x88A8)
# Collect without a bridge and write every flow the package would send.
_DUMP = """
redef Multa::pause_without_bridge = F;
global multa_cluster_ctx = open("flows.jsonl");
hook Multa::flow_policy(f: Multa::Flow) &priority=-100
	{
	print multa_cluster_ctx, to_json(f);
	}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("captures", nargs="+", metavar="CAPTURE", help="Ethernet capture(s), each on its own")
    parser.add_argument("--workers", type=int, default=2, help="workers to split over (default: %(default)s)")
    parser.add_argument("--zeek", default=shutil.which("zeek") or "zeek", help="zeek binary")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def address_pair(frame: bytes) -> bytes | None:
    """The sorted outer IP address pair of an Ethernet frame, or None if it carries no IP."""
    off = 12
    etype = int.from_bytes(frame[off:off + 2], "big")
    while etype in _VLAN and len(frame) >= off + 6:
        off += 4
        etype = int.from_bytes(frame[off:off + 2], "big")
    ip = off + 2
    if etype == 0x0800 and len(frame) >= ip + 20:
        a, b = frame[ip + 12:ip + 16], frame[ip + 16:ip + 20]
    elif etype == 0x86DD and len(frame) >= ip + 40:
        a, b = frame[ip + 8:ip + 24], frame[ip + 24:ip + 40]
    else:
        return None
    return min(a, b) + max(a, b)


def split(capture: Path, parts: list[Path]) -> list[int]:
    """Writes *capture*'s frames into *parts* by a hash of the address pair; frames per part."""
    from multa_broker.capture import pcapwriter
    from multa_broker.capture.reader import open_capture

    frames: list[list[tuple[float, bytes]]] = [[] for _ in parts]
    for ts, data, wirelen, linktype in open_capture(capture):
        if linktype != 1:
            raise MultaError(f"{capture}: link type {linktype}; only Ethernet captures are split")
        if wirelen != len(data):
            raise MultaError(f"{capture}: truncated frames (snap length); only whole frames are split")
        pair = address_pair(data)
        frames[zlib.crc32(pair) % len(parts) if pair else 0].append((ts, data))
    for path, mine in zip(parts, frames):
        path.write_bytes(pcapwriter.pcap(mine))
    return [len(f) for f in frames]


def zeek_flows(zeek: str, capture: Path, workdir: Path) -> dict[tuple, tuple[int, ...]]:
    """{(proto, orig_h, orig_p, resp_h, resp_p, start in us): ctx} of every flow Zeek sends."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dump.zeek").write_text(_DUMP)
    proc = subprocess.run([zeek, "-C", "-r", str(capture.resolve()), str(zeek_scripts()), "dump.zeek"],
                          cwd=workdir, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "MULTA_COLLECTOR": "scripts"})
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MultaError(f"zeek failed on {capture}: {tail}")
    out = {}
    path = workdir / "flows.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        f = json.loads(line)
        key = (f["orig_p"]["proto"], str(ipaddress.ip_address(f["orig_h"])), f["orig_p"]["port"],
               str(ipaddress.ip_address(f["resp_h"])), f["resp_p"]["port"], round(f["ts"] * 1e6))
        out[key] = tuple(f["ctx"])
    return out


def compare(one: dict[tuple, tuple[int, ...]], workers: dict[tuple, tuple[int, ...]]) -> dict:
    """Figures of the workers' ctx against one node's, over the flows both sent."""
    common = sorted(one.keys() & workers.keys())
    n = len(common)
    same = sum(one[k] == workers[k] for k in common)
    per = {}
    for i, name in enumerate(FEATURES):
        total_one = sum(one[k][i] for k in common)
        total_workers = sum(workers[k][i] for k in common)
        per[name] = {
            "kept": round(total_workers / total_one, 4) if total_one else None,
            "lower_share": round(sum(workers[k][i] < one[k][i] for k in common) / n, 4) if n else None,
            "higher": sum(workers[k][i] > one[k][i] for k in common),
        }
    nonzero = [k for k in common if any(one[k])]
    return {
        "flows": n,
        "only_one_node": len(one.keys() - workers.keys()),
        "only_workers": len(workers.keys() - one.keys()),
        "ctx_equal_share": round(same / n, 4) if n else None,
        "ctx_equal_share_nonzero": (round(sum(one[k] == workers[k] for k in nonzero) / len(nonzero), 4)
                                    if nonzero else None),
        "flows_with_context": len(nonzero),
        "per_count": per,
    }


def measure(zeek: str, capture: Path, k: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    parts = [work / f"part{i}.pcap" for i in range(k)]
    frames = split(capture, parts)
    one = zeek_flows(zeek, capture, work / "one")
    workers: dict[tuple, tuple[int, ...]] = {}
    for i, part in enumerate(parts):
        workers.update(zeek_flows(zeek, part, work / f"worker{i}"))
    return {"capture": str(capture), "workers": k, "frames_per_worker": frames, **compare(one, workers)}


def run(args: argparse.Namespace) -> int:
    if shutil.which(args.zeek) is None and not Path(args.zeek).is_file():
        raise MultaError(f"zeek binary {args.zeek!r} not found (put Zeek 8 on PATH or pass --zeek)")
    if args.workers < 2:
        raise MultaError("--workers must be at least 2")
    rows = []
    with tempfile.TemporaryDirectory(prefix="multa-cluster-context-") as tmp:
        for i, cap in enumerate(args.captures):
            rows.append(measure(args.zeek, Path(cap), args.workers, Path(tmp) / str(i)))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"host context on {args.workers} workers (split by address pair) against one node")
    head = f"{'capture':<40}{'flows':>7}{'w/ ctx':>8}{'equal':>8}{'eq ctx':>8}"
    head += "".join(f"{name:>12}" for name in FEATURES)
    print(head)
    for r in rows:
        line = (f"{Path(r['capture']).name[:39]:<40}{r['flows']:>7}{r['flows_with_context']:>8}"
                f"{_pct(r['ctx_equal_share']):>8}{_pct(r['ctx_equal_share_nonzero']):>8}")
        for name in FEATURES:
            kept = r["per_count"][name]["kept"]
            line += f"{_pct(kept):>12}"
        print(line)
    print("equal: flows whose ctx is the one-node ctx; eq ctx: the same among flows with any context on "
          "one node; per count: the workers' sum as a share of one node's")
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"
