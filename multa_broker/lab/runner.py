"""One lab run: network up, each scenario captured and labelled, manifest written, all cleaned up.

Clean-up runs on success, failure, Ctrl-C and SIGTERM/SIGHUP: every process
the lab started is stopped by PID, then every namespace it made is deleted
(after stopping, by PID, anything still inside it).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from multa_broker.errors import MultaError
from multa_broker.lab import labels as lab_labels
from multa_broker.lab.network import BRIDGE, DELAY_QUEUE, HOSTS, LAN, Conditions, Network
from multa_broker.lab.procs import Procs, lab_env
from multa_broker.lab.scenario import KINDS, REGISTRY, UNAVAILABLE, Context, ScenarioError, find_tool
from multa_broker.lab.tools import versions

# Importing the scenario modules registers them.
from multa_broker.lab import benign, benign_wide, quic, tunnels, othertunnels, threats, scans, floods, bruteforce  # noqa: F401,E402  (run order)
from multa_broker.lab import tor, p2p  # noqa: F401,E402  (the tor and p2p scenarios, after the others)

log = logging.getLogger("multa.lab")

#: Executables the lab itself needs, whatever the scenarios.
CORE_TOOLS = ("ip", "tc", "ethtool", "tcpdump", "ss")
#: Tools scenarios use when present (versions go in the manifest).
OPTIONAL_TOOLS = ("nginx", "dnsmasq", "wget", "lftp", "redis-benchmark", "openssl", "ssh-keygen", "iptables")
SETTLE_S = 1.0
SNAPLEN = 1600
BUFFER_KIB = 32768


@dataclass
class Outcome:
    name: str
    kind: str
    status: str  # ran | skipped | failed
    seed: int = 0
    reason: str = ""
    capture: str | None = None
    seconds: float = 0.0
    packets: int = 0
    packets_dropped: int = 0
    flows: int = 0
    labelled: int = 0
    unmatched: int = 0
    unmatched_examples: list[str] = field(default_factory=list)
    shaping_kbit: dict[str, int] = field(default_factory=dict)
    mtu: int = 1500
    mss_clamp: int | None = None
    #: Each host's receive delay (a round trip is twice it), its jitter, and its receive loss share.
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The run's --quick scale (1.0 full): a resumed run keeps only runs of its own scale.
    scale: float = 1.0


def scenario_names(requested: Sequence[str] | None) -> list[str]:
    """Expand names and groups (all, benign, tunnel, threat) in registry order."""
    known = list(REGISTRY) + list(UNAVAILABLE)
    if not requested:
        return known
    out: list[str] = []
    for name in requested:
        if name == "all":
            picks = known
        elif name in KINDS:
            picks = [n for n in known if (REGISTRY[n].kind if n in REGISTRY else UNAVAILABLE[n][0]) == name]
        elif name in known:
            picks = [name]
        else:
            raise MultaError(f"unknown scenario {name!r}; known: {', '.join(known)} (or all, {', '.join(KINDS)})")
        out += [p for p in picks if p not in out]
    return out


def preflight() -> None:
    if os.geteuid() != 0:
        raise MultaError("the lab needs root (network namespaces, raw sockets); run it as root")
    missing = [t for t in CORE_TOOLS if find_tool(t) is None]
    if missing:
        raise MultaError(f"the lab needs {', '.join(missing)}; install with `multa lab setup`")
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise MultaError(f"`ip netns` does not work here: {p.stderr.strip()}")


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every finally: clean-up runs."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Capture:
    """tcpdump on the switch's bridge: every frame between lab hosts, once."""

    def __init__(self, procs: Procs, net: Network, pcap: Path, snaplen: int = SNAPLEN):
        self.procs, self.net, self.pcap = procs, net, pcap
        # A small snap length keeps ring slots small (the default 256 KiB slot
        # leaves room for a handful of frames and bursts get dropped); frames
        # are at most 1514 bytes with offloads off, so nothing is cut.
        self.daemon = procs.start(net.switch, ["tcpdump", "-i", BRIDGE, "-n", "-U", "--immediate-mode",
                                               "-s", str(snaplen), "-B", str(BUFFER_KIB),
                                               "-Z", "root", "-w", str(pcap), "ip and not igmp"],
                                  f"tcpdump-{pcap.stem}")
        deadline = time.monotonic() + 15
        while "listening on" not in self.daemon.log_text():
            if self.daemon.proc.poll() is not None or time.monotonic() > deadline:
                raise MultaError(f"tcpdump did not start: {self.daemon.log_text().strip()[-300:]}")
            time.sleep(0.05)

    def stop(self) -> tuple[int, int]:
        """Stop tcpdump (it flushes on SIGTERM); return (packets captured, dropped by kernel)."""
        time.sleep(SETTLE_S)  # let the last frames of the scenario arrive
        self.procs.stop(self.daemon, grace=10)
        text = self.daemon.log_text()
        cap = re.findall(r"(\d+) packets? captured", text)
        drop = re.findall(r"(\d+) packets? dropped by kernel", text)
        return int(cap[-1]) if cap else 0, int(drop[-1]) if drop else 0


#: Scenarios whose packet rates a user-space delay queue cannot carry (floods, the stateless scanner):
#: they get the drawn loss but no delay.
NO_DELAY = frozenset({"dos-synflood", "dos-udpflood", "dos-icmpflood", "dos-synspoof", "dos-randsrc",
                      "dos-httpflood", "scan-masscan"})


def conditions(name: str, seed: int, scale: float) -> Conditions:
    """Path conditions for one scenario run, from their own seeded RNGs (the scenario's draws, and the
    MTU and MSS draws of runs made before delay and loss existed, stay as they were).

    Shrunk (CI) runs keep MTU 1500, no clamping, no delay and no loss: the CI checks wire-sized
    frames against 1500 and must stay quick. Tunnel scenarios keep MTU 1500 and no clamping: they set
    inner MTUs for a 1500-byte path (a smaller outer MTU would fragment their packets).
    """
    if scale < 1:
        return Conditions()
    have_iptables = find_tool("iptables") is not None
    base = Conditions()
    if REGISTRY[name].kind != "tunnel":
        base = Conditions.draw(random.Random(f"{seed}:{name}:path"), mss_possible=have_iptables)
    if not have_iptables:
        return base
    return base.with_path(random.Random(f"{seed}:{name}:delay"), delay_possible=name not in NO_DELAY)


def _start_delays(procs: Procs, net: Network, cond: Conditions, seed: int) -> None:
    """One delay process per host (``lab/netdelay.py``), each bound to its queue before traffic starts."""
    if not cond.delay_ms:
        return
    daemons = []
    for i, host in enumerate(net.hosts.values()):
        argv = [sys.executable, "-m", "multa_broker.lab.netdelay", "--queue", str(DELAY_QUEUE),
                "--delay-ms", str(cond.delay_ms), "--jitter-ms", str(cond.jitter_ms), "--seed", str(seed * 100 + i)]
        daemons.append(procs.start(host.ns, argv, f"netdelay-{host.role}"))
    deadline = time.monotonic() + 15
    for d in daemons:
        while "bound" not in d.log_text():
            if d.proc.poll() is not None or time.monotonic() > deadline:
                raise ScenarioError(f"the delay queue in {d.ns} did not start: {d.log_text().strip()[-300:]}")
            time.sleep(0.05)


def _run_one(name: str, net: Network, out: Path, work: Path, seed: int, scale: float) -> Outcome:
    spec = REGISTRY[name]
    o = Outcome(name, spec.kind, "ran", seed)
    reason = spec.missing()
    if reason:
        o.status, o.reason = "skipped", reason
        log.warning("scenario %s skipped: %s", name, reason)
        return o
    sdir = work / f"{name}-s{seed}"
    sdir.mkdir(parents=True)
    sdir.chmod(0o755)
    procs = Procs(out / "logs", lab_env(work / "home"), client_log=f"{name}-s{seed}-clients")
    rng = random.Random(f"{seed}:{name}")
    ctx = Context(f"{name}-s{seed}", net, procs, rng, sdir, scale)
    pcap = out / f"{name}-s{seed}.pcap"
    t0 = time.monotonic()
    log.info("scenario %s: %s", name, spec.summary)
    try:
        cond = conditions(name, seed, scale)
        o.shaping_kbit = net.shape(rng, mtu=cond.mtu).to_json()
        net.set_conditions(cond)
        o.mtu, o.mss_clamp = cond.mtu, cond.mss
        o.delay_ms, o.jitter_ms, o.loss = cond.delay_ms, cond.jitter_ms, cond.loss
        _start_delays(procs, net, cond, seed)
        cap = Capture(procs, net, pcap, snaplen=max(SNAPLEN, cond.mtu + 100))
        try:
            spec.func(ctx)
        finally:
            o.packets, o.packets_dropped = cap.stop()
    except ScenarioError as e:
        o.status, o.reason = "failed", str(e)
        log.error("scenario %s failed: %s", name, e)
    except Exception as e:  # a bug in one scenario must not lose the others' captures
        o.status, o.reason = "failed", f"internal error: {type(e).__name__}: {e}"
        log.exception("scenario %s failed", name)
    finally:
        procs.stop_all()
        for fn in ctx.cleanups:
            try:
                fn()
            except OSError as e:
                log.warning("clean-up after %s: %s", name, e)
        left = net.stop_leftovers()
        if left:
            ctx.notes.append("stopped after the scenario (had left the lab's process group): " + ", ".join(left))
        o.seconds = round(time.monotonic() - t0, 1)
        o.notes = ctx.notes
    if o.status != "ran":
        # Half-done traffic could carry wrong labels (a client hitting a dead port): drop it.
        pcap.unlink(missing_ok=True)
        return o
    if not ctx.rules:
        raise MultaError(f"scenario {name} stated no label rules")
    flows = lab_labels.read_capture_flows(pcap)
    result = lab_labels.label(flows, ctx.rules)
    records = [lab_labels.record(pcap.name, name, item) for item in result.labelled]
    lab_labels.write(out / "labels.jsonl", records)
    o.capture = pcap.name
    o.flows, o.labelled, o.unmatched = len(flows), len(result.labelled), len(result.unmatched)
    o.unmatched_examples = [str(k) for k in result.unmatched[:5]]
    o.counts = lab_labels.counts(records)
    log.info("scenario %s: %d packets, %d flows, %d labelled, %d unmatched, %.1fs",
             name, o.packets, o.flows, o.labelled, o.unmatched, o.seconds)
    return o


#: One line per finished scenario run (its Outcome), written after its labels: what --resume keeps.
OUTCOMES_FILE = "outcomes.jsonl"


def _resumable(out: Path, scale: float) -> dict[tuple[str, int], Outcome]:
    """The scenario runs an earlier, unfinished run of OUT completed, by (name, seed); labels.jsonl is
    cut back to their captures (a run stopped while writing one capture's labels leaves a partial
    set, and that scenario runs again)."""
    done: dict[tuple[str, int], Outcome] = {}
    path = out / OUTCOMES_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    if not any(line.strip() for line in lines) and _read_labels(out / "labels.jsonl"):
        # Labels with no outcome records: a finished run, or one made before --resume existed.
        # Starting afresh would delete them, and the lab cannot remake them without the traffic.
        raise MultaError(f"{out} has labels but no {OUTCOMES_FILE} to resume from (a finished run, or one "
                         f"made before --resume): nothing was changed; use another --out, or move it away")
    for line in lines:
        try:
            o = Outcome(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut short by the stop
        if o.status == "ran" and o.capture and (out / o.capture).is_file() and o.scale == scale:
            done[(o.name, o.seed)] = o
    captures = {o.capture for o in done.values()}
    kept = [r for r in _read_labels(out / "labels.jsonl") if r.get("capture") in captures]
    per_capture: dict[str, int] = {}
    for r in kept:
        per_capture[r["capture"]] = per_capture.get(r["capture"], 0) + 1
    done = {k: o for k, o in done.items() if per_capture.get(o.capture, 0) == o.labelled}
    captures = {o.capture for o in done.values()}
    lab_labels.write(out / "labels.jsonl", [r for r in kept if r["capture"] in captures], append=False)
    path.write_text("".join(json.dumps(asdict(o)) + "\n" for o in done.values()))
    return done


def _read_labels(path: Path) -> list[dict[str, Any]]:
    """labels.jsonl's complete lines (the last may be cut short by a stop)."""
    out = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def run(out: Path, requested: Sequence[str] | None = None, seed: int = 1, scale: float = 1.0,
        keep_work: bool = False, repeat: int = 1, resume: bool = False) -> dict[str, Any]:
    """Run the lab; write OUT/<scenario>-s<seed>.pcap, OUT/labels.jsonl, OUT/manifest.json; return the manifest.

    With ``repeat`` > 1 every scenario runs once per seed ``seed .. seed+repeat-1``. With ``resume``
    the scenario runs an earlier run of OUT finished (same scale) are kept, not run again.
    """
    names = scenario_names(requested)
    if repeat < 1:
        raise MultaError(f"--repeat must be at least 1, not {repeat}")
    seeds = list(range(seed, seed + repeat))
    preflight()
    out.mkdir(parents=True, exist_ok=True)
    done = _resumable(out, scale) if resume else {}
    if done:
        log.info("resuming %s: %d scenario runs kept", out, len(done))
    else:
        (out / "labels.jsonl").write_text("")
        (out / OUTCOMES_FILE).write_text("")
        shutil.rmtree(out / "logs", ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="multa-lab-"))
    work.chmod(0o755)
    (work / "home").mkdir()
    run_id = secrets.token_hex(2)
    started = time.time()
    outcomes: list[Outcome] = []
    try:
        with _signals_interrupt(), Network(run_id) as net:
            for s in seeds:
                for name in names:
                    if name in UNAVAILABLE:
                        outcomes.append(Outcome(name, UNAVAILABLE[name][0], "skipped", s, UNAVAILABLE[name][1]))
                        continue
                    if (name, s) in done:
                        outcomes.append(done[(name, s)])
                        continue
                    outcome = _run_one(name, net, out, work, s, scale)
                    outcome.scale = scale
                    with (out / OUTCOMES_FILE).open("a") as f:
                        f.write(json.dumps(asdict(outcome)) + "\n")
                    outcomes.append(outcome)
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    manifest = _manifest(out, seeds, scale, run_id, started, outcomes)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _manifest(out: Path, seeds: list[int], scale: float, run_id: str, started: float,
              outcomes: list[Outcome]) -> dict[str, Any]:
    records = lab_labels.read(out / "labels.jsonl")
    tools = {t for o in outcomes if o.status == "ran" for t in REGISTRY[o.name].needs}
    tools |= set(CORE_TOOLS) | {t for t in OPTIONAL_TOOLS if find_tool(t)}
    return {
        "seed": seeds[0],
        "seeds": seeds,
        "scale": scale,
        "run_id": run_id,
        "started": started,
        "seconds": round(time.time() - started, 1),
        "network": {"lan": str(LAN), "hosts": {r: [ip, *extra] for r, (ip, extra) in HOSTS.items()}},
        "scenarios_run": sorted({o.name for o in outcomes if o.status == "ran"}),
        "skipped": _reasons(outcomes, "skipped"),
        "failed": [{"scenario": o.name, "seed": o.seed, "reason": o.reason} for o in outcomes if o.status == "failed"],
        "tool_versions": versions(sorted(tools)),
        "flows": len(records),
        "counts": lab_labels.counts(records),
        "scenarios": [asdict(o) for o in outcomes],
    }


def _reasons(outcomes: list[Outcome], status: str) -> list[dict[str, str]]:
    """One entry per scenario (not per seed) with its reason."""
    seen: dict[str, str] = {}
    for o in outcomes:
        if o.status == status:
            seen.setdefault(o.name, o.reason)
    return [{"scenario": n, "reason": r} for n, r in seen.items()]
