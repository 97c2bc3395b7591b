"""QUIC scenarios: HTTP/3 over QUIC v1 from two real implementations.

``quic`` runs ngtcp2's example server and client (Debian's ngtcp2-server and
ngtcp2-client, GnuTLS builds, HTTP/3 by nghttp3); ``quic-aioquic`` runs
aioquic (PyPI) through the lab's small HTTP/3 glue, :mod:`.quicapp`. Each
client run is one QUIC connection, so one labelled UDP flow (two when the
ngtcp2 client migrates to a new local port). The seed draws object sizes,
requests per connection, parallel connections, cipher suites, congestion
control, session resumption with 0-RTT, key updates and packet sizes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Sequence

from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.procs import Daemon
from multa_broker.lab.scenario import Context, ScenarioError, scenario
from multa_broker.lab.services import LAB_DOMAIN, WebSite, tls_cert, web_content

QUIC = Labels("quic", "encrypted", "none", "benign")
#: A client that has closed its socket answers the server's last packets with ICMP port unreachable:
#: part of a benign exchange, but no QUIC, so no service or encryption label.
LATE_ICMP = Labels(None, None, "none", "benign")
GTLS_SERVER = "/usr/sbin/gtlsserver"
GTLS_CLIENT = "gtlsclient"
#: ngtcp2's GnuTLS priority strings: TLS 1.3 only, one AEAD each (QUIC has no other TLS version).
GTLS_CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
GTLS_PRIORITY = {
    "TLS_AES_128_GCM_SHA256": "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM",
    "TLS_AES_256_GCM_SHA384": "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM",
    "TLS_CHACHA20_POLY1305_SHA256": "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305",
}


def _site(ctx: Context) -> WebSite:
    """Objects of log-uniform sizes: page assets are small, a few downloads are large."""
    return web_content(ctx, n=ctx.count(12, 30, minimum=4), lo=200, hi=1_200_000)


def _port(ctx: Context) -> int:
    return ctx.choice([443, 443, 443, 4433, 8443])


def _datagram_size(ctx: Context, sizes: Sequence[int]) -> int:
    """A seeded QUIC datagram size that fits the drawn path MTU (a bigger one would not leave the host)."""
    room = ctx.net.conditions.mtu - 28  # IPv4 and UDP headers
    return ctx.choice([s for s in sizes if s <= room] or [1200])


#: What ngtcp2's client prints when a connection failed: it still exits with status 0.
NGTCP2_FAILURES = ("ERR_HANDSHAKE_TIMEOUT", "ERR_IDLE_CLOSE", "ERR_CRYPTO", "ERR_PROTO")


def _batch(ctx: Context, server: Daemon, argvs: Sequence[Sequence[object]], tag: str, timeout: float = 90) -> None:
    """Run several clients at once (parallel connections, as a browser opens them).

    A dead server fails the scenario (every later connection would be half a conversation). A
    single connection that failed (a handshake or a 0-RTT request timing out) is real QUIC
    traffic, as on any network, so it stays, labelled, and is counted in the manifest's notes.
    """
    if len(argvs) == 1:
        r = ctx.client("cli", argvs[0], timeout=timeout)
        outputs = [(tag, r.returncode, r.output)]
    else:
        outputs = _parallel(ctx, argvs, tag, timeout)
    if server.proc.poll() is not None:
        raise ScenarioError(f"QUIC server exited with status {server.proc.returncode}: {ctx.log_tail(server, 2)}")
    for name, code, text in outputs:
        why = [m for m in NGTCP2_FAILURES if m in text] + ([] if code == 0 else
                                                          ["timed out" if code is None else f"status {code}"])
        if why:
            ctx.notes.append(f"{name}: connection failed ({', '.join(why)})")


def _parallel(ctx: Context, argvs: Sequence[Sequence[object]], tag: str,
              timeout: float) -> list[tuple[str, int | None, str]]:
    """Start every client, wait for all within one bound; (name, exit status or None, output) of each."""
    running = [ctx.procs.start(ctx.cli.ns, argv, f"{ctx.name}-{tag}-{i}", cwd=ctx.dir) for i, argv in enumerate(argvs)]
    outputs: list[tuple[str, int | None, str]] = []
    deadline = time.monotonic() + timeout
    for d in running:
        try:
            code: int | None = d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # stopped below like the rest
            code = None
        ctx.procs.stop(d)
        outputs.append((d.name, code, d.log_text()))
    return outputs


def _ngtcp2_client(ctx: Context, addr: str, port: int, site: WebSite, lane: int) -> list[object]:
    """One gtlsclient run: several requests on one connection, with the seed's transport choices."""
    paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 8)))
    argv: list[object] = [GTLS_CLIENT, "-q", "--exit-on-all-streams-close", "--timeout", "15s",
                          "--handshake-timeout", "10s", "--cc", ctx.choice(["cubic", "cubic", "reno", "bbr", "bbr2"])]
    if ctx.rng.random() < 0.5:
        argv += ["--sni", f"www.{LAB_DOMAIN}"]
    if ctx.rng.random() < 0.3:
        argv += ["--ciphers", GTLS_PRIORITY[ctx.choice(GTLS_CIPHERS)]]
    if ctx.rng.random() < 0.4:
        # Resumption: the ticket and transport parameters of this client's last connection (0-RTT when allowed).
        # Per lane: parallel clients of one batch never share a ticket file.
        slot = f"{lane}-{ctx.rng.randrange(3)}"
        argv += ["--session-file", ctx.path(f"quic/sess{slot}"), "--tp-file", ctx.path(f"quic/tp{slot}")]
        if ctx.rng.random() < 0.3:
            argv.append("--disable-early-data")
    if ctx.rng.random() < 0.15:
        argv += ["--key-update", f"{ctx.rng.randint(20, 400)}ms"]
    if ctx.rng.random() < 0.1:
        # Connection migration: the client moves to a new local port mid-connection (a second flow).
        argv += ["--change-local-addr", f"{ctx.rng.randint(50, 500)}ms"]
    if ctx.rng.random() < 0.3 or ctx.net.conditions.mtu < 1500:
        # Below 1500 always: the server must not probe past the path MTU, because Debian's
        # gtlsserver 0.12.1 aborts (assertion `gso_size`) after sendmsg fails with EMSGSIZE.
        argv += ["--max-udp-payload-size", str(_datagram_size(ctx, [1200, 1252, 1350, 1452]))]
    if ctx.rng.random() < 0.2:
        argv += ["--max-stream-data-bidi-local", ctx.choice(["64K", "256K", "1M"]),
                 "--max-data", ctx.choice(["1M", "4M"])]
    argv += ["--no-pmtud"] if ctx.rng.random() < 0.3 else []
    argv += [ctx.target(addr), str(port), *[f"https://www.{LAB_DOMAIN}{p}" for p in paths]]
    return argv


@scenario("quic", "benign", "ngtcp2 HTTP/3 server and client (QUIC v1, GnuTLS): resumption, 0-RTT, migration",
          needs=(GTLS_SERVER, GTLS_CLIENT, "openssl"))
def quic(ctx: Context) -> None:
    addr, port = ctx.srv.extra[0], _port(ctx)
    ctx.rule(QUIC, server=addr, ports=ports(port), protos=("udp",), what="ngtcp2 gtlsserver")
    ctx.rule(LATE_ICMP, server=addr, client=ctx.cli.ip, protos=("icmp",), what="ICMP errors to late QUIC packets")
    site = _site(ctx)
    crt, key = tls_cert(ctx, "quic", f"www.{LAB_DOMAIN}")
    # No -V (Retry address validation): Debian's gtlsserver 0.12.1 aborts on an assertion
    # (`gso_size` in send_packet) a few connections into such a run. quic-aioquic draws Retry.
    limit = []
    if ctx.net.conditions.mtu < 1500:
        # The server's own datagrams (path-MTU probes included) stay within the path: gtlsserver
        # 0.12.1 aborts (assertion `gso_size`) after sendmsg fails with EMSGSIZE.
        limit = ["--max-udp-payload-size", str(min(1452, ctx.net.conditions.mtu - 28))]
    server = ctx.daemon("srv", [GTLS_SERVER, "-q", "-d", site.root, "--timeout", "20s", *limit, addr, str(port), key,
                                crt], "gtlsserver", listen=[("udp", addr, port)])
    for b in range(ctx.count(35, 70, minimum=3)):
        width = ctx.choice([1, 1, 1, 2, 3, 4])
        _batch(ctx, server, [_ngtcp2_client(ctx, addr, port, site, i) for i in range(width)], f"gtlsclient{b}")
        ctx.pause(0.05, 0.8)


def _aioquic_missing() -> str | None:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        return "missing aioquic (pip install aioquic, the lab extra)"
    return None


def _aioquic_client(ctx: Context, addr: str, port: int, site: WebSite, lane: int) -> list[object]:
    paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 8)))
    argv: list[object] = [sys.executable, "-m", "multa_broker.lab.quicapp", "get", "--host", ctx.target(addr),
                          "--port", str(port), "--cc", ctx.choice(["reno", "cubic"]), "--timeout", "60",
                          "--max-datagram-size", str(_datagram_size(ctx, [1200, 1200, 1252, 1350, 1452]))]
    if ctx.rng.random() < 0.4:
        argv += ["--session-file", ctx.path(f"aioquic/ticket{lane}-{ctx.rng.randrange(3)}")]
        argv += ["--zero-rtt"] if ctx.rng.random() < 0.6 else []
    if ctx.rng.random() < 0.15:
        argv += ["--post", ctx.blob(f"aioquic/post{ctx.rng.randrange(10**6)}.bin", ctx.size(200, 300_000))]
    return [*argv, *paths]


@scenario("quic-aioquic", "benign", "aioquic HTTP/3 server and client (QUIC v1): resumption, 0-RTT, uploads",
          needs=("openssl",), check=_aioquic_missing)
def quic_aioquic(ctx: Context) -> None:
    addr, port = ctx.srv.extra[1], _port(ctx)
    ctx.rule(QUIC, server=addr, ports=ports(port), protos=("udp",), what="aioquic")
    ctx.rule(LATE_ICMP, server=addr, client=ctx.cli.ip, protos=("icmp",), what="ICMP errors to late QUIC packets")
    site = _site(ctx)
    crt, key = tls_cert(ctx, "aioquic", f"www.{LAB_DOMAIN}")
    argv: list[object] = [sys.executable, "-m", "multa_broker.lab.quicapp", "serve", "--bind", addr, "--port",
                          str(port), "--root", site.root, "--cert", crt, "--key", key, "--max-seconds", "900",
                          "--max-datagram-size", str(_datagram_size(ctx, [1200, 1252, 1350]))]
    if ctx.rng.random() < 0.3:
        argv.append("--retry")
    server = ctx.daemon("srv", argv, "aioquic-server", listen=[("udp", addr, port)])
    for b in range(ctx.count(30, 60, minimum=3)):
        width = ctx.choice([1, 1, 1, 2, 3])
        _batch(ctx, server, [_aioquic_client(ctx, addr, port, site, i) for i in range(width)], f"aioquic{b}")
        ctx.pause(0.05, 0.8)
