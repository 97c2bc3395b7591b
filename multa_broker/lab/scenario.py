"""Scenarios: what runs in the lab, and the context each one runs in.

A scenario is a function registered with :func:`scenario`. It states its
label rules first (:meth:`Context.rule`), then starts services and drives
clients through the context, which tracks every process, bounds every
command in time and draws every varying choice from the seeded RNG.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from multa_broker.errors import MultaError
from multa_broker.lab.labels import ALL_PROTOS, Labels, Rule
from multa_broker.lab.network import Host, Network, assert_lab_address
from multa_broker.lab.procs import BASE_PATH, Daemon, Procs, Result

log = logging.getLogger("multa.lab.scenario")

KINDS = ("benign", "tunnel", "threat")


class ScenarioError(MultaError):
    """A scenario could not produce the traffic it promises (a service did not start...)."""


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    kind: str
    summary: str
    func: Callable[["Context"], None]
    #: Executables that must exist (looked up on the lab's PATH or as absolute paths).
    needs: tuple[str, ...] = ()
    #: Extra availability check: returns a reason it cannot run, or None.
    check: Callable[[], str | None] | None = None

    def missing(self) -> str | None:
        """Why this scenario cannot run here, or None."""
        absent = [t for t in self.needs if find_tool(t) is None]
        if absent:
            return "missing " + ", ".join(absent) + " (install with `multa lab setup`)"
        return self.check() if self.check else None


REGISTRY: dict[str, ScenarioSpec] = {}
#: Scenarios that cannot be done honestly here, with the reason (reported as skipped).
UNAVAILABLE: dict[str, tuple[str, str]] = {}


def scenario(name: str, kind: str, summary: str, needs: Sequence[str] = (),
             check: Callable[[], str | None] | None = None):
    if kind not in KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}")

    def register(func: Callable[["Context"], None]) -> Callable[["Context"], None]:
        REGISTRY[name] = ScenarioSpec(name, kind, summary, func, tuple(needs), check)
        return func

    return register


def find_tool(name: str) -> str | None:
    if name.startswith("/"):
        return name if Path(name).is_file() else None
    return shutil.which(name, path=BASE_PATH)


@dataclass
class Context:
    """Everything one scenario run may use. ``scale`` < 1 shrinks counts and durations (CI)."""

    name: str
    net: Network
    procs: Procs
    rng: random.Random
    dir: Path
    scale: float = 1.0
    rules: list[Rule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Called after the scenario's processes are stopped (files outside the work folder).
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    # -- hosts -----------------------------------------------------------------
    @property
    def srv(self) -> Host:
        return self.net.hosts["srv"]

    @property
    def cli(self) -> Host:
        return self.net.hosts["cli"]

    @property
    def atk(self) -> Host:
        return self.net.hosts["atk"]

    # -- labels ----------------------------------------------------------------
    def rule(self, labels: Labels, server: str | None = None, ports: frozenset[int] | None = None,
             client: str | None = None, protos: Sequence[str] | None = None, what: str = "") -> None:
        self.rules.append(Rule(labels, server, ports, client,
                               frozenset(protos) if protos else ALL_PROTOS, what))

    # -- seeded choices ------------------------------------------------------------
    def count(self, lo: int, hi: int, minimum: int = 1) -> int:
        """A seeded count in lo..hi, shrunk by ``scale``."""
        return max(minimum, round(self.rng.randint(lo, hi) * self.scale))

    def seconds(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi) * max(self.scale, 0.2)

    def size(self, lo: int, hi: int) -> int:
        """A seeded size, log-uniform in lo..hi (object sizes span orders of magnitude).

        A shrunk run (scale < 1) also shrinks the top of the range, so CI captures stay small.
        """
        if self.scale < 1:
            hi = max(min(hi, lo * 4), int(hi * self.scale * self.scale))
        return int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def pause(self, lo: float, hi: float) -> None:
        time.sleep(self.seconds(lo, hi))

    def choice(self, items: Sequence):
        return self.rng.choice(list(items))

    # -- files ---------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def mkdir(self, rel: str, mode: int = 0o755) -> Path:
        p = self.dir / rel
        p.mkdir(parents=True, exist_ok=True)
        p.chmod(mode)
        return p

    def write(self, rel: str, text: str, mode: int = 0o644) -> Path:
        p = self.path(rel)
        p.write_text(text)
        p.chmod(mode)
        return p

    def blob(self, rel: str, size: int) -> Path:
        """A file of ``size`` seeded random bytes (incompressible, like media)."""
        p = self.path(rel)
        p.write_bytes(self.rng.randbytes(size))
        p.chmod(0o644)
        return p

    # -- processes -------------------------------------------------------------------
    def daemon(self, role: str, argv: Sequence[str], name: str, listen: Sequence[tuple[str, str, int]] = (),
               wait: float = 15.0, env: dict[str, str] | None = None) -> Daemon:
        """Start a service in ``role``'s namespace and wait until it listens on each (proto, addr, port)."""
        d = self.procs.start(self.net.hosts[role].ns, argv, f"{self.name}-{name}", env=env, cwd=self.dir)
        deadline = time.monotonic() + wait
        pending = list(listen)
        while pending:
            if d.proc.poll() is not None:
                raise ScenarioError(f"{name} exited with status {d.proc.returncode}: {self.log_tail(d)}")
            table = self.net.listening(role)
            pending = [(p, a, port) for p, a, port in pending if not _listed(table, p, a, port)]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise ScenarioError(f"{name} not listening on {pending} after {wait:.0f}s: {self.log_tail(d)}")
            time.sleep(0.1)
        return d

    def log_tail(self, d: Daemon, lines: int = 5) -> str:
        try:
            text = d.log_text().strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def client(self, role: str, argv: Sequence[str], timeout: float, ok: bool = False,
               env: dict[str, str] | None = None, input: bytes | None = None) -> Result:
        """Run a client in ``role``'s namespace, bounded by ``timeout`` seconds.

        With ``ok`` a failing client fails the scenario: benign scenarios promise
        the service really answered.
        """
        r = self.procs.run(self.net.hosts[role].ns, argv, timeout, env=env, input=input, cwd=self.dir)
        if ok and r.returncode != 0:
            what = "timed out" if r.timed_out else f"exited with status {r.returncode}"
            tail = " | ".join(r.output.strip().splitlines()[-3:])
            raise ScenarioError(f"{argv[0]} {what}: {tail}")
        return r

    def target(self, addr: str) -> str:
        return assert_lab_address(addr)

    def wait_until(self, what: str, test: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not test():
            if time.monotonic() > deadline:
                raise ScenarioError(f"{what} not ready after {timeout:.0f}s")
            time.sleep(0.2)


def _listed(ss_table: str, proto: str, addr: str, port: int) -> bool:
    for line in ss_table.splitlines():
        cols = line.split()
        if len(cols) < 5 or cols[0] != proto:
            continue
        local = cols[4]
        host, _, p = local.rpartition(":")
        host = host.split("%")[0]
        if p == str(port) and host in (addr, "*", "0.0.0.0", "[::]"):
            return True
    return False
