"""More floods: UDP, ICMP, SYN from spoofed lab sources, random-source floods, and HTTP request floods.

Packet floods are bounded by hping3's packet count (-c) and a process
timeout; HTTP floods by ab's request count and time limit or wrk's duration.
Spoofed sources are lab addresses only (10.77.0.0/16, checked). As in
:mod:`.threats`, packet-flood flows carry no service label; HTTP floods are
real HTTP requests and keep the http label (like slowloris).
"""

from __future__ import annotations

import sys

from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.scenario import Context, scenario
from multa_broker.lab.services import nginx, web_content
from multa_broker.lab.threats import FLOOD, Browsing

HTTP_DOS = Labels("http", "cleartext", "none", "dos")


def _hping(ctx: Context, mode: list[str], count: int, gap_us: int, src: str | None = None) -> None:
    argv = ["hping3", *mode, "-c", str(count), "-i", f"u{gap_us}"]
    if src:
        argv += ["-a", ctx.target(src)]
    ctx.client("atk", [*argv, ctx.target(ctx.srv.ip)], timeout=count * gap_us / 1e6 + 30)


def _spoofed(ctx: Context, lo: int, hi: int) -> list[str]:
    """Unused lab addresses to spoof: on the LAN (nobody answers ARP) or off it (no route back)."""
    return sorted({f"10.77.{ctx.choice([0, 0, 1, 2, 9, 44])}.{ctx.rng.randint(100, 250)}"
                   for _ in range(ctx.rng.randint(lo, hi))})


def _flood(ctx: Context, mode_fn, runs: tuple[int, int] = (1, 3), spoof: float = 0.0) -> None:
    """``runs`` hping3 runs; each is spoofed from an unused lab address with probability ``spoof``."""
    ctx.rule(FLOOD, client=ctx.atk.ip, what="hping3")
    n = ctx.rng.randint(*runs)
    sources = [s if ctx.rng.random() < spoof else None for s in _spoofed(ctx, n, n)]
    for s in sources:
        if s:
            ctx.rule(FLOOD, client=ctx.target(s), what="hping3 spoofed source")
    site = web_content(ctx, n=3, hi=100_000)
    nginx(ctx, site, ctx.srv.ip)
    with Browsing(ctx, site):
        ctx.pause(0.5, 1.5)
        for src in sources:
            mode, count, gap = mode_fn()
            _hping(ctx, mode, count, gap, src=src)
            ctx.notes.append(f"hping3 {' '.join(mode)} -c {count} -i u{gap}" + (f" -a {src}" if src else ""))
            ctx.pause(0.2, 1.5)


@scenario("dos-udpflood", "threat", "hping3 UDP flood (drawn port, payload size and rate), bounded by packet count",
          needs=("hping3", "nginx"))
def dos_udpflood(ctx: Context) -> None:
    def mode():
        port = ctx.choice([53, 123, 161, 80, 443, 1900, 11211, ctx.rng.randint(1024, 65535)])
        m = ["--udp", "-p", str(port), "-d", str(ctx.size(1, 1400) if ctx.rng.random() < 0.8 else 0)]
        if ctx.rng.random() < 0.3:
            m += ["-k", "-s", str(ctx.rng.randint(1024, 65000))]  # one source port: one big flow
        return m, ctx.count(300, 1500, minimum=30), ctx.rng.randint(100, 3000)
    _flood(ctx, mode, spoof=0.3)


@scenario("dos-icmpflood", "threat", "hping3 ICMP flood (echo or timestamp requests, drawn size and rate), bounded",
          needs=("hping3", "nginx"))
def dos_icmpflood(ctx: Context) -> None:
    def mode():
        m = ["--icmp", "-C", ctx.choice(["8", "8", "8", "13"]), "-d", str(ctx.size(8, 1400))]
        return m, ctx.count(100, 800, minimum=20), ctx.rng.randint(100, 3000)
    # All echo requests between two hosts are one flow (Zeek's ICMP semantics): several runs, most from
    # spoofed lab sources, give several flows.
    _flood(ctx, mode, runs=(3, 8), spoof=0.7)


@scenario("dos-synspoof", "threat", "hping3 SYN floods from several spoofed lab addresses at drawn rates, bounded",
          needs=("hping3", "nginx"))
def dos_synspoof(ctx: Context) -> None:
    # Spoofed sources are unused lab addresses: on the LAN (nobody answers ARP) or off it (no route back).
    sources = _spoofed(ctx, 3, 8)
    ctx.rule(FLOOD, client=ctx.atk.ip, what="hping3")
    for s in sources:
        ctx.rule(FLOOD, client=ctx.target(s), what="hping3 spoofed source")
    site = web_content(ctx, n=3, hi=100_000)
    nginx(ctx, site, ctx.srv.ip)
    port = ctx.choice(["80", "80", "443", "22", "8080"])
    with Browsing(ctx, site):
        ctx.pause(0.5, 1.5)
        for s in sources:
            count = ctx.count(100, 600, minimum=20)
            gap = ctx.choice([50, 200, 1000, 5000])
            _hping(ctx, ["-S", "-p", port, "-w", str(ctx.choice([512, 1024, 5840, 65535]))], count, gap, src=s)
    ctx.notes.append(f"spoofed sources {', '.join(sources)}")


def random_prefixes(ctx: Context) -> list[str]:
    """1-4 /24s of the lab's network outside its LAN: no lab host lives there, and no route leads back."""
    return sorted({f"10.77.{ctx.rng.randint(100, 199)}" for _ in range(ctx.rng.randint(1, 4))})


@scenario("dos-randsrc", "threat", "SYN or UDP flood with a new spoofed lab source per packet (as a DDoS reaches "
          "its victim: thousands of one-packet flows), drawn port, size and rate, bounded",
          needs=("nginx",))
def dos_randsrc(ctx: Context) -> None:
    site = web_content(ctx, n=3, hi=100_000)
    nginx(ctx, site, ctx.srv.ip)
    proto = "tcp" if ctx.rng.random() < 0.6 else "udp"
    port = ctx.choice([80, 80, 443, 22, 8080] if proto == "tcp" else [53, 123, 161, 1900, 11211, 27015])
    count = ctx.count(400, 3000, minimum=50)
    rate = ctx.choice([200, 500, 1000, 3000])
    argv = [sys.executable, "-m", "multa_broker.lab.rawflood", "--dst", ctx.target(ctx.srv.ip), "--port", str(port),
            "--proto", proto, "--count", str(count), "--rate", str(rate), "--seed", str(ctx.rng.randint(1, 10**6))]
    for prefix in random_prefixes(ctx):
        argv += ["--prefix", prefix]
    with Browsing(ctx, site):
        # After the browsing rule Browsing added: first match wins, so the client's browsing stays
        # benign though this rule names no client.
        ctx.rule(FLOOD, server=ctx.target(ctx.srv.ip), what="random-source flood")
        ctx.pause(0.5, 1.5)
        ctx.client("atk", argv, timeout=count / rate + 30, ok=True)
        ctx.pause(0.5, 1.5)
    ctx.notes.append(" ".join(argv[2:]))


@scenario("dos-httpflood", "threat", "HTTP request flood against nginx with ab or wrk (drawn concurrency), bounded",
          needs=("nginx", "ab"))
def dos_httpflood(ctx: Context) -> None:
    ctx.rule(HTTP_DOS, server=ctx.srv.ip, ports=ports(80), client=ctx.atk.ip, protos=("tcp",), what="ab/wrk")
    site = web_content(ctx, n=4, hi=50_000)
    nginx(ctx, site, ctx.srv.ip)
    # Floods mostly hit the front page (small), sometimes an object.
    path = ctx.choice(["/", "/index.html", "/index.html", ctx.choice(site.paths)])
    url = f"http://{ctx.target(ctx.srv.ip)}{path}"
    with Browsing(ctx, site):
        ctx.pause(0.5, 1.5)
        from multa_broker.lab.scenario import find_tool
        if find_tool("wrk") and ctx.rng.random() < 0.4:
            secs = ctx.count(5, 15, minimum=2)
            argv = ["wrk", "-t", "1", "-c", str(ctx.rng.randint(5, 100)), "-d", f"{secs}s", "--timeout", "5s", url]
            ctx.client("atk", argv, timeout=secs + 30)
        else:
            n = ctx.count(500, 3000, minimum=50)
            # -t before -n: -t alone implies -n 50000.
            argv = ["ab", "-q", "-t", "40", "-n", str(n), "-c", str(ctx.rng.randint(2, 50)), "-s", "5", "-r"]
            if ctx.rng.random() < 0.4:
                argv.append("-k")
            ctx.client("atk", [*argv, url], timeout=80)
        ctx.notes.append(" ".join(argv[:-1]))
        ctx.pause(0.5, 1.5)
