"""The ``p2p`` scenario: BitTorrent swarms between lab peers with a local tracker.

Real programs from Debian: opentracker (the tracker, HTTP and UDP announces, a whitelist of the
run's torrents), mktorrent or transmission-create (torrents of seeded random content), and as
peers transmission-cli (Transmission 3.00, libtransmission) and aria2c. Each scenario run has
several rounds; each round makes a new torrent, starts one seeder on the server and one to three
leechers on the client and attacker hosts (and an extra client address), waits until every leecher
holds the whole content (compared byte for byte with the source), lets them seed a moment, then
stops them (they send their "stopped" announces).

Encryption is drawn per round, and every peer of a round follows it, so the label is known:

* ``plain``: every peer is transmission-cli preferring unencrypted connections (``-et``, settings
  ``encryption 0``): each connection opens with the plain BitTorrent handshake (``\\x13BitTorrent
  protocol``) and carries the pieces in the clear -> ``p2p cleartext none benign``;
* ``encrypted``: every peer requires Message Stream Encryption (transmission-cli ``-er``, aria2c
  ``--bt-require-crypto=true --bt-min-crypto-level=arc4``), so every connection is an MSE/PE
  Diffie-Hellman exchange followed by RC4 -> ``p2p encrypted none benign``. aria2 always opens with
  MSE (it falls back to the plain handshake only when that is allowed), so it only takes part in
  encrypted rounds, and only with an HTTP tracker (aria2 1.36 announces over UDP only through its
  DHT socket, and DHT is off).

Tracker announces (HTTP ``GET /announce?info_hash=...`` or the UDP tracker protocol) are labelled
``p2p cleartext none benign``: nDPI names both BitTorrent, whose service is p2p in
``multa_broker/dataset/labels/ndpi.yaml``, and they are BitTorrent traffic, not browsing.

DHT, local peer discovery, peer exchange and port mapping (UPnP/NAT-PMP) are off: each peer finds
the others through the tracker only, and nothing is sent to multicast or broadcast addresses.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from multa_broker.lab.addrs import add_address
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.procs import Daemon
from multa_broker.lab.scenario import Context, ScenarioError, find_tool, scenario

P2P_CLEAR = Labels("p2p", "cleartext", "none", "benign")
P2P_ENC = Labels("p2p", "encrypted", "none", "benign")
#: Tracker announces (HTTP or UDP): BitTorrent's own protocol, in the clear.
TRACKER = P2P_CLEAR

TRACKER_PORTS = (6969, 6969, 2710, 1337, 8000)
#: Peer listen ports: BitTorrent's classic range and a high range, all below the kernel's ephemeral
#: ports (32768-60999), so no connection's client port can be mistaken for a peer's listen port.
PEER_PORTS = [*range(6881, 7000), *range(10000, 32000)]
#: Leecher places after the client (10.77.0.20) and attacker (10.77.0.66) hosts' own addresses.
EXTRA_PEERS = (("cli", "10.77.0.25"), ("atk", "10.77.0.61"))


@dataclass
class Torrent:
    path: Path
    #: The content's top-level name (a file, or a folder of files) under the seeder's folder.
    name: str
    files: dict[str, str]  # relative path -> sha1 of its bytes
    size: int
    info_hash: str
    announce: str


@dataclass
class Peer:
    role: str
    addr: str
    port: int
    client: str  # "transmission" or "aria2"
    dir: Path
    daemon: Daemon | None = None
    done: bool = False
    notes: list[str] = field(default_factory=list)


def _bvalue_end(b: bytes, i: int) -> int:
    """End offset of the bencoded value starting at ``i``."""
    c = b[i:i + 1]
    if c == b"i":
        return b.index(b"e", i) + 1
    if c in (b"l", b"d"):
        i += 1
        while b[i:i + 1] != b"e":
            i = _bvalue_end(b, i)
        return i + 1
    colon = b.index(b":", i)
    return colon + 1 + int(b[i:colon])


def info_hash(torrent: bytes) -> str:
    """SHA-1 of the bencoded ``info`` dictionary (the torrent's identity), in hex."""
    if torrent[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    i = 1
    while torrent[i:i + 1] != b"e":
        key_end = _bvalue_end(torrent, i)
        value_end = _bvalue_end(torrent, key_end)
        if torrent[i:key_end] == b"4:info":
            return hashlib.sha1(torrent[key_end:value_end]).hexdigest()
        i = value_end
    raise ValueError("no info dictionary")


def _content(ctx: Context, r: int) -> tuple[str, dict[str, str], int]:
    """Seeded random content for round ``r``: one file, or a folder of 2-5 files."""
    seed_dir = ctx.mkdir(f"p2p/r{r}/seed")
    n = ctx.choice([1, 1, 1, 2, 3, 5])
    name = f"lab-data-{r}.bin" if n == 1 else f"lab-set-{r}"
    rels = [name] if n == 1 else [f"{name}/part{i}.{ctx.choice(['bin', 'iso', 'mkv', 'tar'])}" for i in range(n)]
    files, total = {}, 0
    for rel in rels:
        p = ctx.blob(f"p2p/r{r}/seed/{rel}", ctx.size(60_000, 8_000_000 // n))
        files[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
        total += p.stat().st_size
    assert (seed_dir / name).exists()
    return name, files, total


def _make_torrent(ctx: Context, r: int, announce: str) -> Torrent:
    name, files, size = _content(ctx, r)
    out = ctx.path(f"p2p/r{r}/{name}.torrent")
    target = ctx.dir / f"p2p/r{r}/seed/{name}"
    private = ctx.rng.random() < 0.3
    exp = ctx.choice([15, 16, 17, 18, 19, 20])  # pieces of 32 KiB to 1 MiB
    if find_tool("transmission-create") and ctx.rng.random() < 0.4:
        argv = ["transmission-create", "-t", announce, "-s", str(2 ** exp // 1024), "-o", out, target]
        argv[1:1] = ["-p"] if private else []
    else:
        argv = ["mktorrent", "-a", announce, "-l", str(exp), "-o", out, *(["-p"] if private else []), target]
    ctx.client("srv", argv, timeout=60, ok=True)
    return Torrent(out, name, files, size, info_hash(out.read_bytes()), announce)


def _complete(peer: Peer, t: Torrent) -> bool:
    """The peer's copy equals the source, byte for byte."""
    for rel, digest in t.files.items():
        p = peer.dir / rel
        try:
            if p.stat().st_size != 0 and hashlib.sha1(p.read_bytes()).hexdigest() == digest:
                continue
        except OSError:
            pass
        return False
    return True


def _transmission(ctx: Context, peer: Peer, t: Torrent, encrypted: bool, seeder: bool, tag: str,
                  utp: bool) -> Daemon:
    conf = ctx.mkdir(f"p2p/{tag}-conf")
    settings = {
        "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "port-forwarding-enabled": False,
        "utp-enabled": utp, "bind-address-ipv4": peer.addr, "bind-address-ipv6": "::1",
        "peer-port": peer.port, "peer-port-random-on-start": False, "encryption": 2 if encrypted else 0,
        "rpc-enabled": False, "blocklist-enabled": False, "message-level": 2,
        "peer-limit-per-torrent": ctx.choice([10, 50, 60]), "start-added-torrents": True,
        "download-dir": str(peer.dir), "incomplete-dir-enabled": False,
        "preallocation": ctx.choice([0, 1]),
    }
    (conf / "settings.json").write_text(json.dumps(settings, indent=1))
    argv = ["transmission-cli", "-g", conf, "-w", peer.dir, "-p", str(peer.port), "-M",
            "-er" if encrypted else "-et"]
    if seeder:
        argv.append("-v")
    elif ctx.rng.random() < 0.25:
        argv += ["-d", str(ctx.choice([200, 500, 1000, 3000]))]
    argv.append(t.path)
    return ctx.daemon(peer.role, argv, f"transmission-{tag}")


def _aria2(ctx: Context, peer: Peer, t: Torrent, seeder: bool, tag: str) -> Daemon:
    argv = ["aria2c", f"--dir={peer.dir}", f"--listen-port={peer.port}", f"--interface={peer.addr}",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
            "--disable-ipv6=true", "--bt-require-crypto=true", "--bt-min-crypto-level=arc4",
            "--seed-ratio=0.0", "--seed-time=30", "--file-allocation=none", "--summary-interval=0",
            "--console-log-level=notice", "--allow-overwrite=true", "--bt-save-metadata=false",
            f"--bt-max-peers={ctx.choice([0, 20, 55])}"]
    if seeder:
        argv += ["--check-integrity=true", "--bt-seed-unverified=false"]
    elif ctx.rng.random() < 0.25:
        argv.append(f"--max-download-limit={ctx.choice([200, 500, 1000, 3000])}K")
    argv.append(str(t.path))
    return ctx.daemon(peer.role, argv, f"aria2-{tag}")


def _start(ctx: Context, peer: Peer, t: Torrent, encrypted: bool, seeder: bool, tag: str, utp: bool) -> None:
    if peer.client == "aria2":
        peer.daemon = _aria2(ctx, peer, t, seeder, tag)
    else:
        peer.daemon = _transmission(ctx, peer, t, encrypted, seeder, tag, utp)


def _round(ctx: Context, r: int, t: Torrent, places: list[tuple[str, str]], used_ports: set[int]) -> None:
    encrypted = ctx.rng.random() < 0.5
    # uTP is on for every transmission peer of a round or for none: a uTP-enabled leecher facing a
    # seeder without uTP opened TCP connections and closed them unused, and never got a piece
    # (libtransmission 3.00 also falls back from a failed uTP attempt with a plain handshake).
    utp = ctx.rng.random() < 0.5
    labels = P2P_ENC if encrypted else P2P_CLEAR
    k = ctx.count(1, 3)
    peers: list[Peer] = []
    for i, (role, addr) in enumerate([(ctx.srv.role, ctx.srv.ip), *places[:k]]):
        port = ctx.choice([p for p in PEER_PORTS if p not in used_ports])
        used_ports.add(port)
        client = ctx.choice(["transmission", "aria2"]) if encrypted else "transmission"
        if not find_tool("aria2c") or not t.announce.startswith("http"):
            client = "transmission"  # aria2 announces over UDP only with its DHT on (and DHT stays off)
        d = ctx.dir / f"p2p/r{r}/seed" if i == 0 else ctx.mkdir(f"p2p/r{r}/peer{i}")
        peers.append(Peer(role, addr, port, client, d))
        ctx.rule(labels, server=addr, ports=ports(port), protos=("tcp", "udp"),
                 what=f"round {r} {'seeder' if i == 0 else 'leecher'} {client} {addr}:{port}")
    seeder, leechers = peers[0], peers[1:]
    if any(p.client == "aria2" for p in peers):
        # aria2 has no uTP; transmission falls back from a failed uTP attempt with a plain handshake.
        utp = False
    ctx.notes.append(f"round {r}: {'encrypted' if encrypted else 'plain'}, utp {utp}, {t.size} bytes in {len(t.files)} file(s), "
                     f"{t.announce.split(':')[0]} tracker, seeder {seeder.client}, leechers "
                     + ", ".join(p.client for p in leechers))
    _start(ctx, seeder, t, encrypted, True, f"r{r}-seed", utp)
    ctx.pause(1.0, 4.0)  # the seeder checks its data and announces first
    for i, peer in enumerate(leechers, 1):
        _start(ctx, peer, t, encrypted, False, f"r{r}-peer{i}", utp)
        ctx.pause(0.2, 3.0)
    limit = min(420.0, 90.0 + t.size * len(leechers) / 150_000)
    deadline = time.monotonic() + limit
    while not all(p.done for p in leechers):
        for p in leechers:
            if not p.done:
                p.done = _complete(p, t)
        for p in peers:
            if p.daemon is not None and p.daemon.proc.poll() is not None and not (p.done and p.client == "aria2"):
                raise ScenarioError(f"{p.client} at {p.addr} exited with status {p.daemon.proc.returncode}: "
                                    f"{ctx.log_tail(p.daemon)}")
        if time.monotonic() > deadline:
            late = [f"{p.client}@{p.addr}" for p in leechers if not p.done]
            raise ScenarioError(f"round {r}: {', '.join(late)} did not get the whole torrent in {limit:.0f}s")
        time.sleep(1.0)
    ctx.pause(2.0, 10.0)  # everyone seeds a moment
    for p in reversed(peers):
        if p.daemon is not None:
            ctx.procs.stop(p.daemon, grace=8.0)  # a stopped peer sends its "stopped" announce
    ctx.pause(0.5, 2.0)


@scenario("p2p", "benign", "BitTorrent swarms (transmission-cli, aria2c) with an opentracker tracker; plain or "
          "MSE-encrypted per round", needs=("opentracker", "transmission-cli", "mktorrent"))
def p2p(ctx: Context) -> None:
    tracker = ctx.srv.extra[0]
    tport = ctx.choice(TRACKER_PORTS)
    ctx.rule(TRACKER, server=tracker, ports=ports(tport), protos=("tcp", "udp"), what="opentracker")
    rounds = ctx.count(4, 7, minimum=2)
    torrents = []
    for r in range(rounds):
        scheme = ctx.choice(["http", "http", "udp"])
        torrents.append(_make_torrent(ctx, r, f"{scheme}://{tracker}:{tport}/announce"))
    # opentracker serves only whitelisted torrents (Debian builds it with an access list); it chroots to its folder.
    tdir = ctx.mkdir("p2p/tracker")
    (tdir / "whitelist").write_text("".join(t.info_hash + "\n" for t in torrents))
    ctx.daemon("srv", ["opentracker", "-i", tracker, "-p", str(tport), "-P", str(tport), "-d", tdir,
                       "-w", "whitelist"], "opentracker", listen=[("tcp", tracker, tport), ("udp", tracker, tport)])
    places = [("cli", ctx.cli.ip), ("atk", ctx.atk.ip)] + [(role, add_address(ctx, role, a)) for role, a in EXTRA_PEERS]
    used: set[int] = set()
    for r, t in enumerate(torrents):
        ctx.rng.shuffle(places)
        _round(ctx, r, t, places, used)
