"""``multa bench bridge``: end-to-end flows/s and latency through a real WebSocket on loopback.

The bridge runs as its own process (``multa bridge``, exactly as deployed).
This process plays Zeek: a :class:`~multa_broker.bench.fakezeek.FakeZeek`
WebSocket server speaking Broker's JSON v1 accepts the bridge's subscription,
sends ``Multa::flows`` events in Zeek's wire format and checks every
``Multa::results`` it gets back for Zeek's exact types. Three phases per run:

* **throughput** -- closed loop: keep ``--window`` flows outstanding, count
  results per second (sustained, after a warm-up);
* **latency** -- open loop at ``--rate`` flows/s in messages of
  ``--flows-per-message`` (Zeek's ``Multa::batch_size``): per-flow time from
  the message leaving Zeek to its result arriving, p50 and p99;
* **overload** -- open loop at ``--overload`` x the measured throughput (or as
  fast as this process can send): the bridge's RSS over time and its drops.

Figures are medians over ``--repeat`` runs, each with a fresh bridge. Both
processes share this machine's cores, as a bridge beside Zeek would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from multa_broker.bench.loopback import free_port

TOPIC = "multa/flows"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="stored model to serve (default: an untrained LMMoE of the "
                                        "default size exported to a temporary store; speed does not "
                                        "depend on training)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase (default 5)")
    parser.add_argument("--overload-seconds", type=float, default=12.0,
                        help="length of the overload phase (default 12; RSS is sampled throughout)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; figures are medians (default 3)")
    parser.add_argument("--rate", type=float, default=5000.0, help="offered flows/s for the latency phase")
    parser.add_argument("--overload", type=float, default=10.0,
                        help="overload phase offers this many times the measured throughput")
    parser.add_argument("--window", type=int, default=8000, help="flows outstanding in the throughput phase")
    parser.add_argument("--flows-per-message", type=int, default=100, help="flows per Multa::flows event")
    parser.add_argument("--packets", type=int, default=20, help="packets per flow")
    parser.add_argument("--contract", type=int, choices=(1, 2), default=2,
                        help="flow contract version the fake Zeek sends (2: with host context; "
                             "1: an older Zeek package's records, without)")
    parser.add_argument("--encoding", choices=("typed", "packed", "both"), default="packed",
                        help="how the fake Zeek sends flows: packed (Multa::packed_flows, the package's "
                             "default, answered with Multa::packed_results), typed (Multa::flows, answered "
                             "with Multa::results) or both, alternating in one run (default packed)")
    parser.add_argument("--batch", type=int, default=256, help="bridge batch.max_flows")
    parser.add_argument("--max-wait-ms", type=float, default=1.0, help="bridge batch.max_wait_ms")
    parser.add_argument("--threads", type=int, default=1, help="bridge model.threads")
    parser.add_argument("--worker", choices=("process", "thread"), default="process", help="bridge model.worker")
    parser.add_argument("--json-decoder", choices=("msgspec", "json"), default="msgspec",
                        help="bridge websocket.use_msgspec (json: the stdlib fallback)")
    parser.add_argument("--phases", default="throughput,latency,overload",
                        help="comma-separated subset of throughput,latency,overload")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the bridge under cProfile and write its stats here (event-loop thread)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON (config, medians, every run) here")


# ------------------------------------------------------------ helpers


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the bridge and its model worker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _rss_mib(pid: int) -> float:
    """Resident memory of the bridge and its worker, MiB."""
    total = 0.0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024.0
        except OSError:
            pass
    return total


def _cpu_s(pid: int, only: str = "all") -> float:
    """User+system CPU seconds of the bridge and its worker (all threads); ``only``: main/children."""
    total = 0.0
    pids = _tree(pid)
    pids = pids[:1] if only == "main" else pids[1:] if only == "children" else pids
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            out[key] = s.value
    return out


def _stop(proc: subprocess.Popen) -> None:
    """Stop the bridge as systemd would: SIGTERM, then SIGKILL after 30 s."""
    proc.send_signal(15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def _bench_model(tmp: Path) -> str:
    """An untrained LMMoE of the default size in a temporary store (speed needs no training)."""
    from multa_broker import store
    from multa_broker.model.lmmoe import LMMoE, LMMoEConfig
    from multa_broker.taxonomy import TASKS

    cfg = LMMoEConfig(tasks={t: list(c) for t, c in TASKS.items()})
    manifest = {"name": "bench-untrained-lmmoe", "version": "1", "n": cfg.n,
                "tasks": [{"name": t, "classes": list(c), "threshold": 0.0} for t, c in TASKS.items()],
                "architecture": cfg.to_json()}
    return str(store.export(LMMoE(cfg), manifest, tmp / "store" / "bench" / "1"))


def _template_flows(count: int, packets: int) -> list[Any]:
    from multa_broker.flow import Flow, FlowKey

    rng = random.Random(7)
    crng = random.Random(8)  # host context from its own stream: the packets stay as they were
    flows = []
    for i in range(count):
        proto = ("tcp", "udp")[i % 2]
        flows.append(Flow(
            FlowKey(proto, f"10.{i % 256}.{(i * 7) % 256}.{i % 250 + 1}", 1024 + rng.randrange(60000),
                    f"192.0.2.{i % 200 + 1}", rng.choice((53, 443, 80, 22)), 1.7e9 + i),
            [rng.randint(40, 1500) for _ in range(packets)], [rng.random() < 0.5 for _ in range(packets)],
            [0] + [rng.randrange(500_000) for _ in range(packets - 1)], f"T{i}",
            tuple(crng.randrange(0, 1001 if k % 4 == 0 else 40) for k in range(6))))
    return flows


class Generator:
    """Zeek's side: sends flows, matches results to send times."""

    def __init__(self, zeek: Any, templates: Any, per_msg: int) -> None:
        self.zeek, self.templates, self.per_msg = zeek, templates, per_msg
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.done_times: list[float] = []
        self.sent = 0
        self.rejected_before = len(zeek.rejected)

    def on_results(self, rec: Any) -> None:
        now = time.monotonic()
        for r in rec.results:
            t0 = self.sent_at.pop(r.uid, None)
            if t0 is not None:
                self.latencies.append(now - t0)
                self.done_times.append(now)

    async def send_one(self) -> None:
        text, uids = self.templates.message(TOPIC, "worker-1", self.per_msg)
        now = time.monotonic()
        for u in uids:
            self.sent_at[u] = now
        await self.zeek.send_text(TOPIC, text)
        self.sent += len(uids)

    def reset(self) -> None:
        self.latencies.clear()
        self.done_times.clear()
        self.sent = 0

    def forget_older_than(self, age: float) -> None:
        cutoff = time.monotonic() - age
        for u in [u for u, t in self.sent_at.items() if t < cutoff]:
            del self.sent_at[u]

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every sent flow is answered (or was dropped: then give up at the timeout)."""
        end = time.monotonic() + timeout
        while self.sent_at and time.monotonic() < end:
            await asyncio.sleep(0.05)
        self.sent_at.clear()


async def _throughput(gen: Generator, seconds: float, window: int) -> dict[str, float]:
    warm = 1.0
    gen.reset()
    t0 = time.monotonic()
    while time.monotonic() < t0 + warm + seconds:
        if len(gen.sent_at) + gen.per_msg <= window:
            await gen.send_one()
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(0.0005)
    t_end = time.monotonic()
    n = sum(1 for t in gen.done_times if t0 + warm <= t <= t_end)
    await gen.settle()
    return {"flows_per_s": n / seconds}


async def _open_loop(gen: Generator, rate: float, seconds: float, warm: float = 0.5) -> dict[str, float]:
    gen.reset()
    interval = gen.per_msg / rate
    t0 = time.monotonic()
    next_t = t0
    measured_from = t0 + warm
    lat_start = None
    while True:
        now = time.monotonic()
        if now >= t0 + warm + seconds:
            break
        if lat_start is None and now >= measured_from:
            lat_start = len(gen.latencies)
            sent_start = gen.sent
        if now < next_t:
            await asyncio.sleep(next_t - now)
            continue
        await gen.send_one()
        next_t += interval
        if next_t < now - 1.0:  # far behind: we cannot offer this rate; do not burst to catch up
            next_t = now
    sent = gen.sent - (sent_start if lat_start is not None else 0)
    await gen.settle(timeout=5.0)
    lat = gen.latencies[lat_start or 0:]
    return {"offered_per_s": sent / seconds, "answered": len(lat), "sent": sent,
            "p50_ms": _percentile(lat, 50) * 1000, "p99_ms": _percentile(lat, 99) * 1000,
            "max_ms": (max(lat) * 1000) if lat else float("nan")}


async def _overload(gen: Generator, rate: float, seconds: float, pid: int, mport: int) -> dict[str, Any]:
    before = await asyncio.to_thread(_scrape, mport)
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - t0, _rss_mib(pid)))
            await asyncio.sleep(0.25)

    task = asyncio.create_task(sample())
    gen.reset()
    t0 = time.monotonic()
    r = await _open_loop_fast(gen, rate, seconds)
    elapsed = time.monotonic() - t0
    stop.set()
    await task
    served = len(gen.done_times)
    gen.sent_at.clear()
    await asyncio.sleep(1.0)
    after = await asyncio.to_thread(_scrape, mport)
    dropped = {k.split("reason=")[1].rstrip("}"): after[k] - before.get(k, 0.0)
               for k in after if k.startswith("multa_bridge_flows_dropped_total{")}
    rss = [m for _, m in samples]
    third = max(1, len(rss) // 3)
    return {"offered_per_s": r["sent"] / elapsed, "served_per_s": served / elapsed,
            "dropped": {k: v for k, v in dropped.items() if v},
            "rss_start_mib": rss[0], "rss_first_third_max_mib": max(rss[:third]),
            "rss_middle_third_max_mib": max(rss[third:-third] or rss),
            "rss_last_third_max_mib": max(rss[-third:]), "rss_max_mib": max(rss),
            "rss_samples": [(round(t, 2), round(m, 1)) for t, m in samples]}


async def _open_loop_fast(gen: Generator, rate: float, seconds: float) -> dict[str, float]:
    """Like _open_loop but without waiting for answers (the bridge is meant to drop)."""
    interval = gen.per_msg / rate
    t0 = time.monotonic()
    next_t = t0
    while time.monotonic() < t0 + seconds:
        now = time.monotonic()
        if now < next_t:
            await asyncio.sleep(next_t - now)
            continue
        await gen.send_one()
        await asyncio.sleep(0)
        next_t += interval
        if next_t < now - 0.5:
            next_t = now
        if len(gen.sent_at) > 200_000:  # results for dropped flows never come: bound our own memory
            gen.forget_older_than(2.0)
    return {"sent": gen.sent}


# ------------------------------------------------------------ one run


async def _one_run(args: argparse.Namespace, model: str, tmp: Path, run_no: int,
                   encoding: str = "packed") -> dict[str, Any]:
    import yaml

    from multa_broker.bench.fakezeek import FakeZeek, FlowTemplates

    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    zeek = await FakeZeek(keep=False).start()
    templates = FlowTemplates(_template_flows(512, args.packets), uid_prefix=f"R{run_no}{encoding[0]}x",
                              version=args.contract, encoding=encoding)
    gen = Generator(zeek, templates, args.flows_per_message)
    zeek.on_results = gen.on_results
    mport = free_port()
    cfg = {
        "websocket": {"url": zeek.url, "use_msgspec": args.json_decoder == "msgspec"},
        "model": {"path": model, "poll_s": 0, "threads": args.threads, "worker": args.worker},
        "batch": {"max_flows": args.batch, "max_wait_ms": args.max_wait_ms},
        "metrics": {"enabled": True, "port": mport},
    }
    cfg_path = tmp / f"bridge-{run_no}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable]
    if args.profile:
        cmd += ["-m", "cProfile", "-o", f"{args.profile}.{run_no}"]
    cmd += ["-m", "multa_broker", "-q", "bridge", "-c", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: dict[str, Any] = {}
    try:
        await zeek.wait_subscribed(60)
        await asyncio.sleep(0.5)
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        main0, gen0 = _cpu_s(proc.pid, "main"), time.process_time()
        if "throughput" in phases:
            out["throughput"] = await _throughput(gen, args.seconds, args.window)
        if "latency" in phases:
            out["latency"] = await _open_loop(gen, args.rate, args.seconds)
        cpu1 = _cpu_s(proc.pid)
        out["bridge_main_cpu_s"] = _cpu_s(proc.pid, "main") - main0
        out["generator_cpu_s"] = time.process_time() - gen0
        m = await asyncio.to_thread(_scrape, mport)
        out["bridge_cpu_s"] = cpu1 - cpu0
        out["bridge_wall_s"] = time.monotonic() - t0
        out["flows_out"] = m.get("multa_bridge_flows_out_total", 0.0)
        out["inference_s"] = m.get("multa_bridge_inference_seconds_sum", 0.0)
        out["batches"] = m.get("multa_bridge_batch_size_count", 0.0)
        if "overload" in phases:
            base = out.get("throughput", {}).get("flows_per_s") or args.rate
            out["overload"] = await _overload(gen, base * args.overload, args.overload_seconds, proc.pid, mport)
        out["rejected_by_zeek"] = len(zeek.rejected)
        text, _ = templates.message(TOPIC, "worker-1", args.flows_per_message)
        out["wire_bytes_per_flow"] = len(text.encode()) / args.flows_per_message
        if zeek.results_in:
            out["result_bytes_per_flow"] = zeek.result_bytes / zeek.results_in
    finally:
        _stop(proc)
        await zeek.stop()
    if proc.returncode not in (0, None) and not out:
        raise RuntimeError(f"bridge exited {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
    out["exit_code"] = proc.returncode
    return out


def _median(runs: list[dict[str, Any]], *path: str) -> float:
    vals = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(float(v))
    return statistics.median(vals) if vals else float("nan")


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "throughput_flows_per_s": _median(runs, "throughput", "flows_per_s"),
        "latency_offered_per_s": _median(runs, "latency", "offered_per_s"),
        "latency_p50_ms": _median(runs, "latency", "p50_ms"),
        "latency_p99_ms": _median(runs, "latency", "p99_ms"),
        "overload_offered_per_s": _median(runs, "overload", "offered_per_s"),
        "overload_served_per_s": _median(runs, "overload", "served_per_s"),
        "overload_rss_start_mib": _median(runs, "overload", "rss_start_mib"),
        "overload_rss_first_third_max_mib": _median(runs, "overload", "rss_first_third_max_mib"),
        "overload_rss_middle_third_max_mib": _median(runs, "overload", "rss_middle_third_max_mib"),
        "overload_rss_last_third_max_mib": _median(runs, "overload", "rss_last_third_max_mib"),
        "bridge_cpu_ms_per_1k_flows": statistics.median(
            [r["bridge_cpu_s"] * 1e6 / r["flows_out"] for r in runs if r.get("flows_out")] or [float("nan")]),
        "inference_share_of_bridge_cpu": statistics.median(
            [r["inference_s"] / r["bridge_cpu_s"] for r in runs if r.get("bridge_cpu_s")] or [float("nan")]),
        "mean_batch": statistics.median([r["flows_out"] / r["batches"] for r in runs if r.get("batches")] or [0]),
        "cpu_us_per_flow_bridge_main": statistics.median(
            [r["bridge_main_cpu_s"] * 1e6 / r["flows_out"] for r in runs if r.get("flows_out")] or [float("nan")]),
        "cpu_us_per_flow_model_worker": statistics.median(
            [(r["bridge_cpu_s"] - r["bridge_main_cpu_s"]) * 1e6 / r["flows_out"]
             for r in runs if r.get("flows_out")] or [float("nan")]),
        "cpu_us_per_flow_generator": statistics.median(
            [r["generator_cpu_s"] * 1e6 / r["flows_out"] for r in runs if r.get("flows_out")] or [float("nan")]),
        "wire_bytes_per_flow": _median(runs, "wire_bytes_per_flow"),
        "result_bytes_per_flow": _median(runs, "result_bytes_per_flow"),
    }


def run(args: argparse.Namespace) -> int:
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    encodings = ("typed", "packed") if args.encoding == "both" else (args.encoding,)
    with tempfile.TemporaryDirectory(prefix="multa-bench-bridge-") as d:
        tmp = Path(d)
        model = args.model or _bench_model(tmp)
        from multa_broker.bridge import wire

        by_encoding: dict[str, list[dict[str, Any]]] = {e: [] for e in encodings}
        for i in range(args.repeat):
            for enc in encodings:  # alternate, so drift hits both alike
                by_encoding[enc].append(asyncio.run(_one_run(args, model, tmp, i, enc)))
            print(f"run {i + 1}/{args.repeat} done", file=sys.stderr)
    summaries = {e: _summary(r) for e, r in by_encoding.items()}
    info = {"model": model if args.model else "untrained LMMoE, default size (temporary store)",
            "packets_per_flow": args.packets, "flows_per_message": args.flows_per_message,
            "flow_contract": args.contract, "encodings": list(encodings),
            "batch": args.batch, "max_wait_ms": args.max_wait_ms, "threads": args.threads,
            "json_decoder": args.json_decoder if wire.msgspec is not None else "json (msgspec missing)",
            "seconds": args.seconds, "repeat": args.repeat, "cpus": os.cpu_count(),
            "worker": args.worker, "loadavg_before": load_before}
    if len(encodings) == 1:
        doc = {"config": info, "median": summaries[encodings[0]], "runs": by_encoding[encodings[0]]}
    else:
        doc = {"config": info, "median": summaries, "runs": by_encoding}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"multa bench bridge: {info['model']}; contract v{args.contract}, {args.packets} packets/flow, "
          f"{args.flows_per_message} "
          f"flows/message, batch {args.batch}/{args.max_wait_ms:g} ms, decoder {info['json_decoder']}, "
          f"model worker {args.worker}, {os.cpu_count()} CPUs, load average before "
          f"{info['loadavg_before']}; median of {args.repeat} runs x {args.seconds:g} s"
          + (", encodings alternating" if len(encodings) > 1 else f", {encodings[0]} encoding"))
    for enc in encodings:
        if len(encodings) > 1:
            events = ("Multa::packed_flows, Multa::packed_results" if enc == "packed"
                      else "Multa::flows, Multa::results")
            print(f"encoding {enc} ({events}):")
        _print_summary(args, summaries[enc], by_encoding[enc])
    if len(encodings) > 1:
        t, p = summaries["typed"], summaries["packed"]
        print(f"packed / typed: throughput {p['throughput_flows_per_s'] / t['throughput_flows_per_s']:.2f}x, "
              f"event-loop CPU per flow {p['cpu_us_per_flow_bridge_main'] / t['cpu_us_per_flow_bridge_main']:.2f}x, "
              f"bytes per flow {p['wire_bytes_per_flow'] / t['wire_bytes_per_flow']:.2f}x, "
              f"per result {p['result_bytes_per_flow'] / t['result_bytes_per_flow']:.2f}x")
    return 0


def _print_summary(args: argparse.Namespace, summary: dict[str, float], runs: list[dict[str, Any]]) -> None:
    rows = [
        ("sustained throughput (flows/s)", summary["throughput_flows_per_s"], ">= 20,000"),
        (f"latency p50 at {summary['latency_offered_per_s']:,.0f} flows/s (ms)", summary["latency_p50_ms"], ""),
        (f"latency p99 at {summary['latency_offered_per_s']:,.0f} flows/s (ms)", summary["latency_p99_ms"],
         "<= 50"),
        ("overload: offered (flows/s)", summary["overload_offered_per_s"], f"{args.overload:g}x throughput"),
        ("overload: answered (flows/s)", summary["overload_served_per_s"], ""),
        ("overload: RSS at start (MiB)", summary["overload_rss_start_mib"], ""),
        ("overload: RSS max, first third (MiB)", summary["overload_rss_first_third_max_mib"], ""),
        ("overload: RSS max, middle third (MiB)", summary["overload_rss_middle_third_max_mib"], ""),
        ("overload: RSS max, last third (MiB)", summary["overload_rss_last_third_max_mib"], "flat"),
        ("bridge+worker CPU per 1k flows (ms)", summary["bridge_cpu_ms_per_1k_flows"], ""),
        ("model call time / bridge+worker CPU time", summary["inference_share_of_bridge_cpu"], ""),
        ("mean batch (flows)", summary["mean_batch"], ""),
        ("CPU per flow: bridge event loop (us)", summary["cpu_us_per_flow_bridge_main"], ""),
        ("CPU per flow: model worker (us)", summary["cpu_us_per_flow_model_worker"], ""),
        ("CPU per flow: load generator / fake Zeek (us)", summary["cpu_us_per_flow_generator"], ""),
        ("bytes per flow on the wire", summary["wire_bytes_per_flow"], ""),
        ("bytes per result on the wire", summary["result_bytes_per_flow"], ""),
        ("ceiling on 2 idle cores (flows/s)", 2e6 / (summary["cpu_us_per_flow_bridge_main"]
                                                   + summary["cpu_us_per_flow_model_worker"]
                                                   + summary["cpu_us_per_flow_generator"]), "CPU-bound"),
    ]
    for label, v, target in rows:
        text = f"{v:,.2f}" if isinstance(v, float) and v < 100 else f"{v:,.0f}"
        print(f"  {label:<44} {text:>12}   {target}")
    drops: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r.get("overload", {}).get("dropped", {}).items():
            drops.setdefault(k, []).append(v)
    if drops:
        print("  overload drops (median per run): " + ", ".join(
            f"{k}={statistics.median(v):,.0f}" for k, v in drops.items()))
    rejected = sum(r.get("rejected_by_zeek", 0) for r in runs)
    print(f"  results Zeek would reject for wrong types: {rejected}")
