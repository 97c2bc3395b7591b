"""The lab network: namespaces on one bridge, no route out, realistic links.

Layout (every name starts with the run's prefix ``mlab-<id>-``)::

    srv (10.77.0.10, .11, .12, .53) --+
    cli (10.77.0.20)                --+-- br0 in sw (tcpdump here sees every frame)
    atk (10.77.0.66)                --+

Each veth pair is created directly between a host namespace and the switch
namespace, so no lab interface ever exists in the root namespace and nothing
the lab sends can reach it or leave the machine. Hosts have only the
connected route of 10.77.0.0/24; IPv6 is disabled so no neighbour discovery
noise appears. Offloads are off on every veth end so frames are wire-sized.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from multa_broker.errors import MultaError
from multa_broker.lab import NS_PREFIX

log = logging.getLogger("multa.lab.network")

LAB_NET = ipaddress.ip_network("10.77.0.0/16")
LAN = ipaddress.ip_network("10.77.0.0/24")
NETNS_ETC = Path("/etc/netns")
BRIDGE = "br0"

#: role -> (primary address, extra addresses). srv's extras let scenarios keep
#: services apart by address (.53 is the lab's resolver).
HOSTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "srv": ("10.77.0.10", ("10.77.0.11", "10.77.0.12", "10.77.0.53")),
    "cli": ("10.77.0.20", ()),
    "atk": ("10.77.0.66", ()),
}
RESOLVER = "10.77.0.53"
OFFLOADS = ("tso", "off", "gso", "off", "gro", "off", "tx", "off")


def sh(argv: list[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run a set-up command in the root namespace (ip, tc, ethtool), bounded in time."""
    log.debug("+ %s", " ".join(argv))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise MultaError(f"lab set-up command failed: {' '.join(argv)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def assert_lab_address(addr: str) -> str:
    """Refuse any target outside the lab network: the lab never sends anywhere else."""
    net = ipaddress.ip_network(addr, strict=False)
    if not net.subnet_of(LAB_NET):  # type: ignore[arg-type]
        raise MultaError(f"refusing target {addr}: outside the lab network {LAB_NET}")
    return addr


@dataclass(frozen=True)
class Host:
    role: str
    ns: str
    ip: str
    extra: tuple[str, ...] = ()
    #: The switch-side veth end of this host's link.
    port: str = ""


@dataclass
class Shaping:
    """One tbf setting per host link; ``rate_kbit`` is shared by both directions."""

    rate_kbit: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, int]:
        return dict(self.rate_kbit)


TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: MTUs drawn per scenario (1500 half the time): tunnels and PPPoE paths below, jumbo frames above.
MTUS = (1280, 1380, 1400, 1420, 1460, 1492, 4000, 9000)
#: MSS values a middlebox clamps SYNs to (drawn in 30 % of scenarios, never above MTU - 40).
MSS_CLAMPS = (536, 1200, 1240, 1360, 1380, 1400, 1410, 1440, 1452)
#: The NFQUEUE number each host's delay process reads (one per namespace, so one number serves all).
DELAY_QUEUE = 0


@dataclass(frozen=True)
class Conditions:
    """Path conditions of one scenario beyond the tbf rate.

    ``delay_ms`` and ``jitter_ms`` apply to every packet a host receives (so the round trip between
    two hosts is twice ``delay_ms``), held by ``lab/netdelay.py`` since the kernel has no netem;
    ``loss`` is the share of packets each host drops on receipt.
    """

    mtu: int = 1500
    mss: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    @staticmethod
    def draw(rng: random.Random, mss_possible: bool = True) -> "Conditions":
        mtu = 1500 if rng.random() < 0.5 else rng.choice(MTUS)
        mss = None
        if mss_possible and rng.random() < 0.3:
            mss = rng.choice([m for m in MSS_CLAMPS if m <= mtu - 40])
        return Conditions(mtu, mss)

    def with_path(self, rng: random.Random, delay_possible: bool = True) -> "Conditions":
        """These conditions plus a drawn round trip, jitter and loss (none in 40 % of runs each way).

        Round trips are log-uniform in 1-300 ms; jitter, in half the delayed runs, is 5-30 % of the
        one-way delay; loss, in 30 % of runs, 0.1-3 %."""
        delay = jitter = 0.0
        if delay_possible and rng.random() >= 0.4:
            delay = round(math.exp(rng.uniform(math.log(1.0), math.log(300.0))) / 2, 2)
            if rng.random() < 0.5:
                jitter = round(delay * rng.uniform(0.05, 0.3), 2)
        loss = round(rng.uniform(0.001, 0.03), 4) if rng.random() < 0.3 else 0.0
        return dataclasses.replace(self, delay_ms=delay, jitter_ms=jitter, loss=loss)


def list_lab_namespaces(prefix: str = NS_PREFIX) -> list[str]:
    p = sh(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def _ns_pids(ns: str) -> list[int]:
    p = sh(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def kill_namespace_processes(ns: str) -> int:
    """Stop, by PID, every process still living in ``ns`` (only lab processes live there)."""
    pids = _ns_pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and _ns_pids(ns):
            time.sleep(0.1)
        pids = _ns_pids(ns)
        if not pids:
            break
    return len(pids)


def delete_namespace(ns: str) -> None:
    left = kill_namespace_processes(ns)
    if left:
        log.warning("%d process(es) still in %s after SIGKILL", left, ns)
    sh(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def clean(prefix: str = NS_PREFIX) -> list[str]:
    """Remove every namespace (and its /etc/netns files) whose name starts with ``prefix``."""
    if not prefix.startswith(NS_PREFIX):
        raise MultaError(f"refusing to clean namespaces prefixed {prefix!r}: lab namespaces start with {NS_PREFIX!r}")
    gone = list_lab_namespaces(prefix)
    for ns in gone:
        delete_namespace(ns)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            if d.name.startswith(prefix):
                shutil.rmtree(d, ignore_errors=True)
    return gone


class Network:
    """Creates and destroys one lab network; use as a context manager."""

    def __init__(self, run_id: str):
        self.prefix = f"{NS_PREFIX}{run_id}-"
        self.switch = f"{self.prefix}sw"
        self.hosts: dict[str, Host] = {
            role: Host(role, f"{self.prefix}{role}", ip, extra, port=f"p-{role}")
            for role, (ip, extra) in HOSTS.items()
        }
        self.created: list[str] = []
        self.conditions = Conditions()

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> "Network":
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _add_ns(self, ns: str) -> None:
        sh(["ip", "netns", "add", ns])
        self.created.append(ns)
        # IPv6 off before any link exists: no router solicitations or MLD reports.
        sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
            "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def create(self) -> None:
        self._add_ns(self.switch)
        sh(["ip", "-n", self.switch, "link", "add", BRIDGE, "type", "bridge"])
        for host in self.hosts.values():
            self._add_ns(host.ns)
            sh(["ip", "-n", self.switch, "link", "add", host.port, "type", "veth",
                "peer", "name", "eth0", "netns", host.ns])
            sh(["ip", "-n", self.switch, "link", "set", host.port, "master", BRIDGE, "up"])
            sh(["ip", "netns", "exec", self.switch, "ethtool", "-K", host.port, *OFFLOADS])
            sh(["ip", "netns", "exec", host.ns, "ethtool", "-K", "eth0", *OFFLOADS])
            for addr in (host.ip, *host.extra):
                sh(["ip", "-n", host.ns, "addr", "add", f"{assert_lab_address(addr)}/{LAN.prefixlen}", "dev", "eth0"])
            sh(["ip", "-n", host.ns, "link", "set", "eth0", "up"])
            # `ip netns exec` bind-mounts these over /etc: lookups go to the lab resolver only.
            etc = NETNS_ETC / host.ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions timeout:1 attempts:2\n")
        sh(["ip", "-n", self.switch, "link", "set", BRIDGE, "up"])
        self._check_isolated()
        log.info("lab network up: %s", ", ".join(f"{h.role}={h.ip}" for h in self.hosts.values()))

    def _check_isolated(self) -> None:
        """Every host has only on-link lab routes: nothing can be sent outside the lab."""
        for host in self.hosts.values():
            routes = sh(["ip", "-n", host.ns, "-4", "route", "show"]).stdout.splitlines()
            for r in routes:
                dst = r.split()[0]
                if dst == "default" or not ipaddress.ip_network(dst).subnet_of(LAB_NET):
                    raise MultaError(f"lab namespace {host.ns} has a route out of the lab: {r}")

    def stop_leftovers(self) -> list[str]:
        """Stop, by PID, every process still in a host namespace (daemons that left the lab's process
        group: samba-dcerpcd, Postfix's master); return their names. Run between scenarios, so no
        server outlives its scenario and answers the next one's clients."""
        names = []
        for host in self.hosts.values():
            pids = _ns_pids(host.ns)
            if not pids:
                continue
            for pid in pids:
                try:
                    names.append(Path(f"/proc/{pid}/comm").read_text().strip())
                except OSError:
                    pass
            kill_namespace_processes(host.ns)
        return sorted(set(names))

    def destroy(self) -> None:
        for ns in reversed(self.created):
            delete_namespace(ns)
        self.created.clear()

    # -- shaping ---------------------------------------------------------------
    def shape(self, rng: random.Random, lo_kbit: int = 1_000, hi_kbit: int = 200_000, mtu: int = 1500) -> Shaping:
        """Give each host link a token-bucket rate drawn log-uniformly (the kernel has no netem).

        The bucket holds at least two frames of ``mtu``: tbf silently drops any frame bigger than its
        bucket, which stalls TCP on jumbo-frame links with a low rate."""
        shaping = Shaping()
        for host in self.hosts.values():
            rate = int(math.exp(rng.uniform(math.log(lo_kbit), math.log(hi_kbit))))
            # Burst must exceed one MTU-sized frame; ~10 ms of tokens otherwise.
            burst = max(rate * 1000 // 8 // 100, 3200, 2 * (mtu + 14))
            tbf = ["tbf", "rate", f"{rate}kbit", "burst", str(burst), "latency", "200ms"]
            sh(["ip", "netns", "exec", host.ns, "tc", "qdisc", "replace", "dev", "eth0", "root", *tbf])
            sh(["ip", "netns", "exec", self.switch, "tc", "qdisc", "replace", "dev", host.port, "root", *tbf])
            shaping.rate_kbit[host.role] = rate
        return shaping

    # -- path conditions: MTU, MSS clamping, loss and the queue of the delay ----------
    def set_conditions(self, cond: "Conditions") -> None:
        """Set every link's MTU, MSS clamping and receive-side loss and delay queue on every host; the
        previous scenario's are undone. The delay itself is held by one ``netdelay`` process per host,
        which the runner starts; until it binds (and after it stops) the queue lets packets pass."""
        if cond == self.conditions:
            return  # already so (a new network starts at MTU 1500 with nothing else): no commands
        have_iptables = shutil.which("iptables", path=TOOL_PATH) is not None
        if (cond.mss or cond.loss or cond.delay_ms) and not have_iptables:
            raise MultaError("MSS clamping, loss and delay need iptables; install it with `multa lab setup`")
        for host in self.hosts.values():
            sh(["ip", "-n", host.ns, "link", "set", "eth0", "mtu", str(cond.mtu)])
            sh(["ip", "-n", self.switch, "link", "set", host.port, "mtu", str(cond.mtu)])
            if not have_iptables:
                continue
            ipt = ["ip", "netns", "exec", host.ns, "iptables"]
            sh([*ipt, "-t", "mangle", "-F", "POSTROUTING"], check=False)
            sh([*ipt, "-F", "INPUT"], check=False)
            if cond.mss:
                sh([*ipt, "-t", "mangle", "-A", "POSTROUTING", "-p", "tcp",
                    "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--set-mss", str(cond.mss)])
            # On receipt, after the switch's capture: the capture shows a lost packet and its resend.
            if cond.loss:
                sh([*ipt, "-A", "INPUT", "-m", "statistic", "--mode", "random",
                    "--probability", f"{cond.loss:.4f}", "-j", "DROP"])
            if cond.delay_ms:
                sh([*ipt, "-A", "INPUT", "-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE), "--queue-bypass"])
        sh(["ip", "-n", self.switch, "link", "set", BRIDGE, "mtu", str(cond.mtu)], check=False)
        self.conditions = cond

    # -- helpers for scenarios ---------------------------------------------------
    def listening(self, role: str) -> str:
        """``ss`` listing of sockets listening in a host's namespace."""
        return sh(["ip", "netns", "exec", self.hosts[role].ns, "ss", "-Hlntu"], check=False).stdout
