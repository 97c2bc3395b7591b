"""The ``tor`` scenario: a private Tor network (Debian's tor in TestingTorNetwork mode) and clients
fetching web pages through it.

The network is like chutney's small ones: three directory authorities (relays too), two middle
relays and two exits, every one a real ``tor`` process with keys made at run time
(``tor-gencert`` for the authorities' v3 keys, ``tor --list-fingerprint`` for the relay
identities). The voting interval is 20 s (TestingTorNetwork allows it), so the first consensus
with every relay is out within about a minute. Then a fresh Tor client (new data directory, so a
new guard and a new directory download) starts for each session, bootstraps, and curl fetches
pages from a lab nginx through it with ``--socks5-hostname`` (the exit resolves the name with the
lab resolver).

Where the nodes are: nodes in one namespace reach each other inside the kernel and are not in
the capture, so the client, the relays and the exits are spread over the three hosts:

    atk: authorities 10.77.0.31-33 (ORPort and DirPort), exit 10.77.0.51
    srv: middle relays 10.77.0.41-42, exit 10.77.0.52, nginx 10.77.0.12, resolver 10.77.0.53
    cli: Tor clients on 10.77.0.20-24 (SOCKS on the namespace's loopback), curl

Labels (first match wins):

* every TCP connection to a node's ORPort: ``tls encrypted tor benign`` -- client to guard and
  directory connections (BEGIN_DIR over the ORPort) as well as relay-to-relay links: all are Tor
  link TLS, which nDPI names ``TLS.Tor`` (service tls, tunnel tor);
* connections to an authority's DirPort (relays uploading descriptors, fetching votes and
  consensuses in plain HTTP): ``http cleartext none benign`` -- Tor's directory protocol is plain
  HTTP, it tunnels nothing;
* the exit's connections to nginx: ``http cleartext none benign`` (what leaves the Tor network);
* the exit's lookups at the lab resolver: ``dns cleartext none benign``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from multa_broker.lab.addrs import add_address
from multa_broker.lab.benign import HTTP, dns_side_rule
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.procs import Daemon
from multa_broker.lab.scenario import Context, ScenarioError, scenario
from multa_broker.lab.services import LAB_DOMAIN, nginx, resolver, web_content

#: Tor link connections (client-relay and relay-relay): TLS carrying Tor cells.
TOR = Labels("tls", "encrypted", "tor", "benign")
#: Tor's directory protocol on a DirPort: plain HTTP, no tunnel.
TOR_DIR = Labels("http", "cleartext", "none", "benign")

AUTHORITIES = ("10.77.0.31", "10.77.0.32", "10.77.0.33")
MIDDLES = ("10.77.0.41", "10.77.0.42")
EXITS = (("atk", "10.77.0.51"), ("srv", "10.77.0.52"))
CLIENT_EXTRA = ("10.77.0.21", "10.77.0.22", "10.77.0.23", "10.77.0.24")
#: ORPorts a relay may listen on (the seed draws one per run) and the authorities' DirPort.
OR_PORTS = (9001, 443, 9090, 5000, 8443)
DIR_PORTS = (7000, 9030, 80)
#: Consensus timing (chutney's): votes every 20 s, 4 s to vote and 4 s to distribute.
VOTING = {"V3AuthVotingInterval": 20, "V3AuthVoteDelay": 4, "V3AuthDistDelay": 4,
          "TestingV3AuthInitialVotingInterval": 20, "TestingV3AuthInitialVoteDelay": 4,
          "TestingV3AuthInitialDistDelay": 4}


@dataclass
class Node:
    nick: str
    role: str  # the lab host whose namespace runs it
    addr: str
    orport: int
    dirport: int | None = None
    exit: bool = False
    authority: bool = False
    datadir: Path | None = None
    fingerprint: str = ""
    v3ident: str = ""


def _common(ctx: Context, datadir: Path) -> list[str]:
    """Options of every node, client included (chutney's common.i, TestingTorNetwork)."""
    return [
        "TestingTorNetwork 1",
        "AssumeReachable 1",
        "PathsNeededToBuildCircuits 0.67",
        "TestingDirAuthVoteExit *",
        "TestingDirAuthVoteGuard *",
        "TestingDirAuthVoteHSDir *",
        "TestingMinExitFlagThreshold 0",
        "V3AuthNIntervalsValid 2",
        f"DataDirectory {datadir}",
        "RunAsDaemon 0",
        "Log notice stdout",
        "SafeLogging 0",
        "ShutdownWaitLength 0",
        "ClientUseIPv6 0",
    ]


def _keys(ctx: Context, node: Node) -> None:
    """Make the node's identity (and for an authority its v3 keys) now; read their fingerprints."""
    assert node.datadir is not None
    keys = node.datadir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o700)
    if node.authority:
        ctx.client(node.role, ["tor-gencert", "--create-identity-key", "-m", "12",
                               "-a", f"{node.addr}:{node.dirport}", "-i", keys / "authority_identity_key",
                               "-s", keys / "authority_signing_key", "-c", keys / "authority_certificate",
                               "--passphrase-fd", "0"],
                   timeout=60, ok=True, input=f"lab-{ctx.rng.randrange(10**9)}\n".encode())
        cert = (keys / "authority_certificate").read_text()
        m = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.M)
        if not m:
            raise ScenarioError(f"no v3 identity in {node.nick}'s authority certificate")
        node.v3ident = m.group(1)
    r = ctx.client(node.role, ["tor", "--list-fingerprint", "--DataDirectory", node.datadir,
                               "--ORPort", f"{node.addr}:{node.orport}", "--Address", node.addr,
                               "--Nickname", node.nick, "--Log", "err stdout"], timeout=60, ok=True)
    m = re.search(rf"^{node.nick} ((?:[0-9A-F]{{4}} ?){{10}})$", r.output, re.M)
    if not m:
        raise ScenarioError(f"tor --list-fingerprint gave no fingerprint for {node.nick}: {r.output[-200:]}")
    node.fingerprint = m.group(1).replace(" ", "")


def _dir_authority_lines(nodes: list[Node]) -> list[str]:
    return [f"DirAuthority {n.nick} orport={n.orport} no-v2 v3ident={n.v3ident} {n.addr}:{n.dirport} {n.fingerprint}"
            for n in nodes if n.authority]


def _relay_torrc(ctx: Context, node: Node, auths: list[str]) -> Path:
    assert node.datadir is not None
    lines = _common(ctx, node.datadir) + auths + [
        f"Nickname {node.nick}",
        f"Address {node.addr}",
        f"ORPort {node.addr}:{node.orport}",
        f"OutboundBindAddress {node.addr}",
        "SocksPort 0",
        f"ContactInfo {node.nick}@{LAB_DOMAIN}",
        # Relays fetch early and often (chutney's relay templates).
        "TestingServerDownloadInitialDelay 0",
        "TestingServerConsensusDownloadInitialDelay 0",
    ]
    if node.authority:
        lines += ["AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1", f"DirPort {node.addr}:{node.dirport}"]
        lines += [f"{k} {v}" for k, v in VOTING.items()]
    if node.exit:
        # Exits to the lab's private addresses (chutney's exit-v4.i), names resolved by the lab resolver.
        # "accept *:80" only puts port 80 in the microdescriptor's policy summary (which leaves private
        # addresses out: tor #11264), else clients see no exit; the namespaces have no route out of the lab.
        lines += ["ExitRelay 1", "ExitPolicyRejectPrivate 0", "ExitPolicy accept 10.77.0.0/16:*",
                  "ExitPolicy accept *:80", "ExitPolicy reject *:*",
                  "ServerDNSDetectHijacking 0", f"ServerDNSTestAddresses www.{LAB_DOMAIN}",
                  "ServerDNSAllowBrokenConfig 1"]
    else:
        lines += ["ExitRelay 0", "ExitPolicy reject *:*"]
    return ctx.write(f"tor/{node.nick}.torrc", "\n".join(lines) + "\n")


def _consensus(node: Node) -> tuple[int, int]:
    """(relays, exits) in the latest microdescriptor consensus an authority holds ((0, 0) before the first)."""
    assert node.datadir is not None
    try:
        text = (node.datadir / "cached-microdesc-consensus").read_text(errors="replace")
    except OSError:
        return 0, 0
    return len(re.findall(r"^r ", text, re.M)), len(re.findall(r"^s (?:.* )?Exit(?: |$)", text, re.M))


def _ready(nodes: list[Node]) -> bool:
    """Every authority's consensus lists every relay, and every exit with the Exit flag."""
    counts = [_consensus(n) for n in nodes if n.authority]
    return all(r >= len(nodes) and e >= sum(n.exit for n in nodes) for r, e in counts)


def _client(ctx: Context, n: int, addr: str, auths: list[str]) -> tuple[Daemon, int]:
    datadir = ctx.mkdir(f"tor/client{n}", 0o700)
    socks = 9050 + n
    lines = _common(ctx, datadir) + auths + [
        f"SocksPort 127.0.0.1:{socks}",
        f"OutboundBindAddress {addr}",
        "ClientOnly 1",
    ]
    if ctx.rng.random() < 0.3:
        lines.append(f"NumEntryGuards {ctx.choice([1, 2, 3])}")
    if ctx.rng.random() < 0.3:
        lines.append(f"CircuitBuildTimeout {ctx.choice([10, 30, 60])}")
    torrc = ctx.write(f"tor/client{n}.torrc", "\n".join(lines) + "\n")
    d = ctx.daemon("cli", ["tor", "-f", torrc], f"tor-client{n}", listen=[("tcp", "127.0.0.1", socks)], wait=30)
    return d, socks


def _bootstrapped(d: Daemon) -> bool:
    try:
        return "Bootstrapped 100%" in d.log_text()
    except OSError:
        return False


@scenario("tor", "tunnel", "private Tor network (3 authorities, 2 middles, 2 exits; TestingTorNetwork) and clients "
          "fetching pages from nginx through it with curl --socks5-hostname",
          needs=("tor", "tor-gencert", "nginx", "curl"))
def tor(ctx: Context) -> None:
    orport = ctx.choice(OR_PORTS)
    dirport = ctx.choice(DIR_PORTS)
    nodes = [Node(f"auth{i}", "atk", a, orport, dirport, authority=True) for i, a in enumerate(AUTHORITIES)]
    nodes += [Node(f"middle{i}", "srv", a, orport) for i, a in enumerate(MIDDLES)]
    nodes += [Node(f"exit{i}", role, a, orport, exit=True) for i, (role, a) in enumerate(EXITS)]
    for node in nodes:
        ctx.rule(TOR, server=node.addr, ports=ports(node.orport), protos=("tcp",), what=f"tor {node.nick} ORPort")
        if node.dirport:
            ctx.rule(TOR_DIR, server=node.addr, ports=ports(node.dirport), protos=("tcp",),
                     what=f"tor {node.nick} DirPort")
    web = ctx.srv.extra[1]
    ctx.rule(HTTP, server=web, ports=ports(80), protos=("tcp",), what="nginx reached from the exits")
    dns_side_rule(ctx)
    ctx.notes.append(f"tor ORPort {orport}, authorities' DirPort {dirport}")

    site = web_content(ctx, hi=600_000)
    nginx(ctx, site, web)
    if resolver(ctx, {f"www.{LAB_DOMAIN}": web}) is None:
        raise ScenarioError("the tor scenario needs the lab resolver (dnsmasq) for the exits' lookups")
    for node in nodes:
        add_address(ctx, node.role, node.addr)
    clients = [ctx.cli.ip] + [add_address(ctx, "cli", a) for a in CLIENT_EXTRA]

    for node in nodes:
        node.datadir = ctx.mkdir(f"tor/{node.nick}", 0o700)
        _keys(ctx, node)
    auths = _dir_authority_lines(nodes)
    for node in nodes:
        listen = [("tcp", node.addr, node.orport)] + ([("tcp", node.addr, node.dirport)] if node.dirport else [])
        ctx.daemon(node.role, ["tor", "-f", _relay_torrc(ctx, node, auths)], f"tor-{node.nick}", listen=listen, wait=30)
    # Wait until a consensus lists every relay (two or three 20 s voting rounds).
    t0 = time.monotonic()
    ctx.wait_until("a Tor consensus with every relay and exit", lambda: _ready(nodes), timeout=180)
    ctx.notes.append(f"consensus with all {len(nodes)} relays after {time.monotonic() - t0:.0f}s")

    for n in range(ctx.count(6, 12, minimum=2)):
        d, socks = _client(ctx, n, clients[n % len(clients)], auths)
        ctx.wait_until(f"tor client {n} bootstrapped", lambda: _bootstrapped(d), timeout=120)
        for _ in range(ctx.count(1, 4)):
            paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 4)))
            host = ctx.choice([f"www.{LAB_DOMAIN}", f"www.{LAB_DOMAIN}", web])
            argv = ["curl", "-s", "--fail", "--max-time", "90", "--socks5-hostname", f"127.0.0.1:{socks}"]
            for p in paths:
                argv += ["-o", "/dev/null", f"http://{host}{p}"]
            ctx.client("cli", argv, timeout=120, ok=True)
            ctx.pause(0.2, 3.0)
        ctx.procs.stop(d)
        ctx.pause(0.5, 2.0)
