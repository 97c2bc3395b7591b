"""``multa bench zeek``: what the multa package costs Zeek, side by side.

On one capture, in one run, alternating, it times ``zeek -r`` in five set-ups:

``plain``      Zeek's default scripts only;
``multa``      plus the multa package in offline mode with a live bridge
               (collection, batching, publishing, results, multa.log, notices);
``publish``    plus the package collecting, batching and publishing to a
               connected WebSocket client that never answers (sink.py; its
               wall time includes 1 s of idling at the end, see below);
``collect``    plus the package collecting and publishing with no bridge
               connected (``Multa::pause_without_bridge = F``);
``new_packet`` plus a reference collector that handles ``new_packet`` for every
               packet (the zeek-flowmeter approach), with the same output as
               ``collect``: the same flows, batched into the same events.

With ``--plugin`` (and a build of the optional Multa::Collector plugin, see
zeek_plugin/ and ``--plugin-dir``), ``multa``, ``publish`` and ``collect``
run twice: as above with the scripts' collector (``MULTA_COLLECTOR=scripts``),
and as ``multa+plugin``, ``publish+plugin``, ``collect+plugin`` with the
plugin's C++ collector.

The package set-ups send flows in the packed encoding, as shipped
(``Multa::flow_encoding = Multa::PACKED``); ``--encoding typed`` sends
``Multa::Flow`` records instead, and ``--encoding both`` runs each package
set-up twice, the second time typed (``-typed`` rows).

The package set-ups run with host context on (``Multa::host_context``, the
default; context.zeek); ``--context off`` turns it off in them, and
``--context both`` runs each of them twice, the second time with it off
(``-noctx`` rows), so that its cost is read off side by side.

Several captures are joined one after another, each at its own pace, or
with ``--overlay`` played at once as the hosts behind a sensor are (see
:mod:`multa_broker.bench.traces`): the same connections, denser in time,
so that costs per batch weigh as they do on a loaded sensor.

Each set-up also runs on a capture without packets, so that start-up and
shutdown (parsing scripts, the WebSocket server, waiting for a peer) can be
told from the cost per packet and per flow that a long-running Zeek pays:
``trace cpu`` is the median CPU time minus the median on the empty capture.

It reports the median wall time, CPU time and peak RSS of the Zeek process
and their ratios to plain Zeek. ``collect`` against ``new_packet`` compares
equal work; ``publish`` is what the package costs Zeek to feed a bridge;
``multa`` is the full product. Flow counts of ``collect`` and
``new_packet`` are printed so that "equal output" is checked, not assumed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from multa_broker.bench.loopback import free_port
from multa_broker.bench.traces import concatenate, empty_pcap, overlay, tiny_trace
from multa_broker.errors import MultaError
from multa_broker.resources import plugin_build, zeek_scripts

# Where zeek_plugin/build.sh puts the Multa::Collector plugin.
PLUGIN_BUILD = plugin_build()
PLUGIN = "+plugin"
# Suffix of a package set-up run with Multa::host_context off.
NOCTX = "-noctx"
_CONTEXT_OFF = "redef Multa::host_context = F;"
# Suffix of a package set-up run with the typed flow encoding.
TYPED = "-typed"
_TYPED_ENCODING = "redef Multa::flow_encoding = Multa::TYPED;"
REFERENCE = Path(__file__).resolve().parent / "new_packet.zeek"
SETUPS = ("plain", "multa", "publish", "collect", "new_packet")

# Prints the number of flows a set-up emitted, so outputs can be compared,
# how many of them carried host context, and the Multa::flows events
# (batches) it published.
_COUNT_PACKAGE = ('global multa_bench_flows = 0; global multa_bench_ctx = 0; '
                  'hook Multa::flow_policy(f: Multa::Flow) '
                  '{ ++multa_bench_flows; if ( f?$ctx ) ++multa_bench_ctx; } event zeek_done() &priority=-100 '
                  '{ print fmt("MULTA_BENCH_FLOWS %d", multa_bench_flows); '
                  'print fmt("MULTA_BENCH_CTX %d", multa_bench_ctx); '
                  'for ( _, m in Telemetry::collect_metrics("zeek", "multa_batches*") ) '
                  'print fmt("MULTA_BENCH_BATCHES %.0f", m$value); }')
# The publish set-up: offline mode, so that Zeek waits for the sink before
# reading the trace, but without holding sent flows for results that never
# come (offline mode holds them until the end; scanning that ever larger
# table would be a cost of the set-up, not of publishing: with a bridge, a
# flow waits only until its result). After the trace Zeek idles for 1 s of
# wall time, then stops: calling terminate() right after the last publish
# made Zeek 8.0.10 spin for 0.6 s of CPU in about one run of five (once for
# minutes), which would measure shutdown, not publishing. So publish's wall
# time includes that idle second; its CPU time does not.
_PUBLISH_ONLY = ('redef Multa::result_timeout = 1 sec; redef Multa::offline_result_timeout = 1 sec; '
                 'module Multa; event zeek_init() &priority=-20 { hold_inflight = F; } module GLOBAL; ')
_COUNT_REFERENCE = ('event zeek_done() &priority=-100 '
                    '{ print fmt("MULTA_BENCH_FLOWS %d", MultaBenchRef::emitted); }')


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    rss_mb: float | None
    flows: int | None
    batches: int | None = None
    ctx_flows: int | None = None


@dataclass
class SetupResult:
    name: str
    runs: list[Run] = field(default_factory=list)
    # Runs on a capture without packets: start-up and shutdown alone.
    empty: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def trace_cpu(self) -> float:
        """CPU time spent on the trace itself: the median run minus the median empty run."""
        return self.median("cpu_s") - statistics.median(r.cpu_s for r in self.empty)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("captures", nargs="*", metavar="CAPTURE",
                        help="capture(s); several are joined into one trace, one after another (Ethernet only)")
    parser.add_argument("--overlay", action="store_true",
                        help="play the captures at once, each with its own addresses, as a sensor sees "
                             "many hosts, instead of one after another (see docs/performance.md)")
    parser.add_argument("--tiny", type=int, default=0, metavar="N",
                        help="instead, synthesise a worst-case trace of N two-packet connections")
    parser.add_argument("--skip-unusable", action="store_true",
                        help="skip captures that are not Ethernet or cannot be read (counted in the "
                             "report) instead of stopping")
    parser.add_argument("--repeat", type=int, default=5, help="runs per set-up (default: %(default)s)")
    parser.add_argument("--zeek", default=shutil.which("zeek") or "zeek", help="zeek binary")
    parser.add_argument("--setups", default=",".join(SETUPS),
                        help="comma-separated subset of: " + ", ".join(SETUPS))
    parser.add_argument("--model", default="default", help="model for the bridge (default: %(default)s)")
    parser.add_argument("--zeek-args", default="", metavar="ARGS",
                        help="extra Zeek options for every set-up, plain included (e.g. script "
                             "optimization: '-O ZAM --optimize-files=zeek_scripts "
                             "--optimize-files=base/utils/strings.zeek', the last so that plain "
                             "has something to compile too)")
    parser.add_argument("--package-script", default="", metavar="ZEEK",
                        help="Zeek script text added to the package set-ups, to try settings "
                             "(e.g. 'redef Multa::batch_interval = 2 secs;')")
    parser.add_argument("--plugin", action="store_true",
                        help="also run the package set-ups with the C++ collector of the Multa::Collector "
                             "plugin (see --plugin-dir)")
    parser.add_argument("--plugin-dir", default=str(PLUGIN_BUILD), metavar="DIR",
                        help="where the plugin is built (default: %(default)s, where zeek_plugin/build.sh "
                             "builds it)")
    parser.add_argument("--context", choices=("on", "off", "both"), default="on",
                        help="host context in the package set-ups: on (the default, as shipped), off "
                             "(Multa::host_context = F), or both: each package set-up again with it off, "
                             "as <set-up>-noctx")
    parser.add_argument("--encoding", choices=("packed", "typed", "both"), default="packed",
                        help="flow encoding of the package set-ups: packed (the default, as shipped), "
                             "typed (Multa::flow_encoding = Multa::TYPED), or both: each package set-up "
                             "again typed, as <set-up>-typed")
    parser.add_argument("--json", action="store_true", help="print results as JSON")



# A Zeek run that takes longer than this is stuck (a set-up's peer gone, ...).
RUN_TIMEOUT_S = 600.0


def _zeek_cmd(zeek: str, trace: Path, setup: str, port: int, extra: str = "",
              zeek_args: tuple[str, ...] = ()) -> list[str]:
    """One set-up's Zeek command line; *extra* goes before the package set-ups' own script."""
    base = [zeek, "-C", "-r", str(trace), *zeek_args]
    if setup == "plain":
        return base
    if setup == "new_packet":
        return base + [str(REFERENCE), "-e", _COUNT_REFERENCE]
    if setup == "collect":
        scripts = [str(zeek_scripts())]
        script = "redef Multa::pause_without_bridge = F; " + _COUNT_PACKAGE
    else:  # multa and publish: offline mode, with their peer on *port*
        package = zeek_scripts()
        scripts = [str(package), str(package / "offline.zeek")]
        script = (f"redef Multa::websocket_port = {port}/tcp; "
                  + (_PUBLISH_ONLY if setup == "publish" else "") + _COUNT_PACKAGE)
    return base + scripts + ["-e", f"{extra} {script}" if extra else script]


@functools.cache
def _gnu_time() -> str | None:
    """GNU time, which reports the peak RSS of the command it runs (looked up once)."""
    path = shutil.which("time")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if "GNU" in out.stdout + out.stderr else None


def _zeek_env(setup: str, plugin_dir: Path | None) -> dict[str, str]:
    """The environment of one set-up's Zeek: which collector the package uses."""
    env = dict(os.environ)
    if setup.endswith(PLUGIN):
        env["ZEEK_PLUGIN_PATH"] = str(plugin_dir)
        env["ZEEK_PLUGIN_ACTIVATE"] = "Multa::Collector"
        env.pop("MULTA_COLLECTOR", None)
    else:
        # The scripts' collector even where a plugin is installed with Zeek.
        env["MULTA_COLLECTOR"] = "scripts"
    return env


def _check_plugin(zeek: str, plugin_dir: Path) -> None:
    if not (plugin_dir / "__zeek_plugin__").is_file():
        raise MultaError(f"--plugin-dir {plugin_dir}: no Zeek plugin there (build it with zeek_plugin/build.sh)")
    env = _zeek_env(PLUGIN, plugin_dir)
    out = subprocess.run([zeek, "-N", "Multa::Collector"], env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or "Multa::Collector" not in out.stdout:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MultaError(f"--plugin-dir {plugin_dir}: Zeek does not load the Multa::Collector plugin: {tail}")


def _run_zeek(cmd: list[str], workdir: Path, timeout_s: float = RUN_TIMEOUT_S,
              env: dict[str, str] | None = None) -> Run:
    """Runs one Zeek; CPU time from wait4, peak RSS from GNU time where present.

    The peak RSS wait4 reports for a child of this process counts the copy of
    this (large) Python process that the child is before it execs Zeek, so
    it is taken from GNU time, which execs Zeek from a small process.
    """
    what = " ".join(cmd[4:]) or "plain"
    rss_file = workdir / "maxrss.txt"
    gnu_time = _gnu_time()
    full = [gnu_time, "-f", "%M", "-o", str(rss_file), *cmd] if gnu_time else cmd
    start = time.perf_counter()
    proc = subprocess.Popen(full, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - start
    if wall >= timeout_s:
        raise MultaError(f"zeek ran longer than {timeout_s:.0f} s and was killed ({what})")
    out = proc.stdout.read().decode(errors="replace")
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (err.strip().splitlines() or ["(no output)"])[-1]
        raise MultaError(f"zeek exited {proc.returncode} ({what}): {tail}")
    flows = batches = ctx_flows = None
    for line in out.splitlines():
        if line.startswith("MULTA_BENCH_FLOWS "):
            flows = int(line.split()[1])
        elif line.startswith("MULTA_BENCH_CTX "):
            ctx_flows = int(line.split()[1])
        elif line.startswith("MULTA_BENCH_BATCHES "):
            batches = int(line.split()[1])
    rss_mb = None
    if gnu_time:
        lines = rss_file.read_text().split()
        rss_mb = int(lines[-1]) / 1024.0 if lines and lines[-1].isdigit() else None
    return Run(wall, usage.ru_utime + usage.ru_stime, rss_mb, flows, batches, ctx_flows)


def _start_sink(port: int, workdir: Path) -> subprocess.Popen:
    log = open(workdir / "sink.log", "w")
    return subprocess.Popen([sys.executable, "-m", "multa_broker.bench.sink", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)


def _start_bridge(port: int, model: str, workdir: Path) -> subprocess.Popen:
    cfg = workdir / "bridge.yaml"
    cfg.write_text(
        f"websocket:\n  url: ws://127.0.0.1:{port}/v1/messages/json\n"
        f"model:\n  path: {model}\n  poll_s: 0\n"
        "reconnect:\n  initial_s: 0.02\n  max_s: 0.05\n  jitter: 0.0\n"
        "metrics:\n  enabled: false\n"
    )
    log = open(workdir / "bridge.log", "w")
    return subprocess.Popen([sys.executable, "-m", "multa_broker", "-q", "bridge", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT)


def run(args: argparse.Namespace) -> int:
    if shutil.which(args.zeek) is None and not Path(args.zeek).is_file():
        raise MultaError(f"zeek binary {args.zeek!r} not found (put Zeek 8 on PATH or pass --zeek)")
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    bad = set(setups) - set(SETUPS)
    if bad:
        raise MultaError(f"--setups: unknown set-up(s) {sorted(bad)}; known: {', '.join(SETUPS)}")
    if "plain" not in setups:
        setups.insert(0, "plain")
    plugin_dir = Path(args.plugin_dir).resolve() if args.plugin else None
    if plugin_dir is not None:
        _check_plugin(args.zeek, plugin_dir)
        setups += [s + PLUGIN for s in setups if s in ("multa", "publish", "collect")]
    context = getattr(args, "context", "on")
    if context == "both":
        setups += [s + NOCTX for s in setups if s.removesuffix(PLUGIN) in ("multa", "publish", "collect")]
    encoding = getattr(args, "encoding", "packed")
    if encoding == "both":
        setups += [s + TYPED for s in setups
                   if s.removesuffix(NOCTX).removesuffix(PLUGIN) in ("multa", "publish", "collect")]
    with tempfile.TemporaryDirectory(prefix="multa-bench-zeek-") as tmp:
        work = Path(tmp)
        trace = work / "trace.pcap"
        if args.tiny:
            packets = tiny_trace(args.tiny, trace)
            what = f"synthetic worst case: {args.tiny} two-packet connections"
        elif args.captures:
            join = overlay if args.overlay else concatenate
            files, packets, skipped = join([Path(c) for c in args.captures], trace, args.skip_unusable)
            what = f"{files} capture(s) " + ("played at once" if args.overlay else "concatenated")
            if skipped:
                what += f" ({skipped} skipped: not Ethernet or unreadable)"
        else:
            raise MultaError("give one or more captures, or --tiny N")
        empty = work / "empty.pcap"
        empty.write_bytes(empty_pcap())
        ports = {s: free_port() for s in setups if s.startswith(("multa", "publish"))}
        peers = {}
        for setup, port in ports.items():
            (work / setup).mkdir()
            peers[setup] = (_start_bridge(port, args.model, work / setup) if setup.startswith("multa")
                            else _start_sink(port, work / setup))
        results = {s: SetupResult(s) for s in setups}
        try:
            for _ in range(args.repeat):
                for setup in setups:  # alternate, so drift hits every set-up alike
                    rundir = work / setup
                    rundir.mkdir(exist_ok=True)
                    peer = peers.get(setup)
                    if peer is not None and peer.poll() is not None:
                        raise MultaError(f"the {setup} peer exited early; see {work / setup}/*.log")
                    base = setup.removesuffix(TYPED).removesuffix(NOCTX)
                    extra = args.package_script
                    if base != setup.removesuffix(TYPED) or context == "off":
                        extra = f"{extra} {_CONTEXT_OFF}".strip()
                    if setup.endswith(TYPED) or encoding == "typed":
                        extra = f"{extra} {_TYPED_ENCODING}".strip()
                    cmd = _zeek_cmd(args.zeek, trace, base.removesuffix(PLUGIN), ports.get(setup, 0),
                                    extra, tuple(shlex.split(args.zeek_args)))
                    env = None if setup == "plain" else _zeek_env(base, plugin_dir)
                    results[setup].runs.append(_run_zeek(cmd, rundir, env=env))
                    cmd[cmd.index(str(trace))] = str(empty)
                    results[setup].empty.append(_run_zeek(cmd, rundir, env=env))
        finally:
            for peer in peers.values():
                peer.terminate()
                peer.wait(timeout=30)
    report = _report(results, what, packets, args.repeat)
    report["host_context"] = context
    report["encoding"] = encoding
    print(json.dumps(report, indent=1) if args.json else _table(report))
    return 0


def _report(results: dict[str, SetupResult], what: str, packets: int, repeat: int) -> dict:
    plain = results["plain"]
    has_rss = all(r.rss_mb is not None for res in results.values() for r in res.runs)
    rows = {}
    for name, res in results.items():
        rows[name] = {
            "wall_s": round(res.median("wall_s"), 4),
            "cpu_s": round(res.median("cpu_s"), 4),
            "rss_mb": round(res.median("rss_mb"), 1) if has_rss else None,
            "wall_ratio": round(res.median("wall_s") / plain.median("wall_s"), 3),
            "cpu_ratio": round(res.median("cpu_s") / plain.median("cpu_s"), 3),
            "rss_ratio": round(res.median("rss_mb") / plain.median("rss_mb"), 3) if has_rss else None,
            "trace_cpu_s": round(res.trace_cpu(), 4),
            "trace_cpu_ratio": round(res.trace_cpu() / plain.trace_cpu(), 3),
            "flows": res.runs[-1].flows,
            "batches": res.runs[-1].batches,
            "ctx_flows": res.runs[-1].ctx_flows,
        }
    return {"trace": what, "packets": packets, "repeat": repeat, "setups": rows}


def _table(report: dict) -> str:
    lines = [f"multa bench zeek: {report['trace']}, {report['packets']:,} packets, "
             f"median of {report['repeat']} alternating runs, host context {report.get('host_context', 'on')}, "
             f"flow encoding {report.get('encoding', 'packed')}",
             f"{'set-up':<22}{'wall s':>9}{'x plain':>9}{'cpu s':>9}{'x plain':>9}"
             f"{'trace cpu':>11}{'x plain':>9}{'RSS MB':>9}{'x plain':>9}{'flows':>9}{'batches':>9}"]
    for name, r in report["setups"].items():
        flows = "-" if r["flows"] is None else f"{r['flows']:,}"
        batches = "-" if r["batches"] is None else f"{r['batches']:,}"
        rss = ("-", "-") if r["rss_mb"] is None else (f"{r['rss_mb']:.1f}", f"{r['rss_ratio']:.3f}")
        lines.append(f"{name:<22}{r['wall_s']:>9.3f}{r['wall_ratio']:>9.3f}{r['cpu_s']:>9.3f}"
                     f"{r['cpu_ratio']:>9.3f}{r['trace_cpu_s']:>11.3f}{r['trace_cpu_ratio']:>9.3f}"
                     f"{rss[0]:>9}{rss[1]:>9}{flows:>9}{batches:>9}")
    s = report["setups"]
    if "collect" in s and "new_packet" in s and s["collect"]["flows"] != s["new_packet"]["flows"]:
        lines.append("note: collect and new_packet emitted different flow counts; see docs/performance.md")
    lines.append("trace cpu: CPU time minus that of the same set-up on a capture without packets "
                 "(start-up and shutdown); batches: Multa::flows events published")
    if any(name.endswith(TYPED) for name in s):
        lines.append(f"{TYPED}: the set-up with the typed flow encoding (Multa::flow_encoding = Multa::TYPED)")
    if any(name.endswith(NOCTX) for name in s):
        lines.append(f"{NOCTX}: the set-up with host context off (Multa::host_context = F)")
    if any(r["rss_mb"] is None for r in s.values()):
        lines.append("note: no GNU time on PATH: peak RSS not measured")
    return "\n".join(lines)
