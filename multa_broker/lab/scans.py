"""More scan techniques: FIN/Xmas/NULL, slow and fast timing templates, and masscan (stateless).

Like :mod:`.threats`, every scan is aimed at lab addresses only (through
:meth:`Context.target`), bounded by the tool (port lists, rates, host
timeouts, masscan's --wait) and by a process timeout, while the client
keeps browsing.
"""

from __future__ import annotations

import re

from multa_broker.lab.network import sh
from multa_broker.lab.scenario import Context, ScenarioError, scenario
from multa_broker.lab.threats import SCAN, Browsing, _port_spec, _targets

#: A second attacker address (on the lab LAN, not used by any host) that masscan answers ARP for.
MASSCAN_SPOOF = "10.77.0.67"


def _nmap_with(ctx: Context, args: list[str], timing: str, timeout: float) -> None:
    ctx.rule(SCAN, client=ctx.atk.ip, what="nmap")
    site = _targets(ctx)
    with Browsing(ctx, site):
        ctx.pause(0.5, 2.0)
        ctx.client("atk", ["nmap", "-n", timing, "--max-retries", str(ctx.rng.randint(0, 2)),
                           "--host-timeout", f"{int(timeout)}s", *args, ctx.target(ctx.srv.ip)], timeout=timeout + 30)
        ctx.pause(0.5, 2.0)
    ctx.notes.append(f"nmap {timing} {' '.join(args)}")


def _stealth(ctx: Context, flag: str) -> None:
    timing = ctx.choice(["-T2", "-T3", "-T4", "-T4", "-T5"])
    # -T2 waits 0.4 s between probes: fewer ports so it stays bounded.
    lo, hi = (40, 150) if timing == "-T2" else (300, 1500)
    _nmap_with(ctx, [flag, "-Pn", *_port_spec(ctx, lo, hi)], timing, timeout=150)


@scenario("scan-fin", "threat", "nmap -sF FIN scan of the server (timing template drawn -T2..-T5)",
          needs=("nmap", "nginx"))
def scan_fin(ctx: Context) -> None:
    _stealth(ctx, "-sF")


@scenario("scan-xmas", "threat", "nmap -sX Xmas scan (FIN+PSH+URG) of the server (timing -T2..-T5)",
          needs=("nmap", "nginx"))
def scan_xmas(ctx: Context) -> None:
    _stealth(ctx, "-sX")


@scenario("scan-null", "threat", "nmap -sN NULL scan (no flags) of the server (timing -T2..-T5)",
          needs=("nmap", "nginx"))
def scan_null(ctx: Context) -> None:
    _stealth(ctx, "-sN")


@scenario("scan-ack", "threat", "nmap -sA ACK scan and -sW window scan (firewall mapping) of the server",
          needs=("nmap", "nginx"))
def scan_ack(ctx: Context) -> None:
    timing = ctx.choice(["-T3", "-T4", "-T5"])
    _nmap_with(ctx, [ctx.choice(["-sA", "-sW"]), "-Pn", *_port_spec(ctx, 200, 1000)], timing, timeout=120)


@scenario("scan-slow", "threat", "nmap -sS with the slow timing templates (-T1 sneaky, -T2 polite), few ports, bounded",
          needs=("nmap", "nginx"))
def scan_slow(ctx: Context) -> None:
    timing = ctx.choice(["-T1", "-T2", "-T2"])
    # -T1 waits 15 s between probes, -T2 0.4 s: the port list keeps the run to about 2 minutes.
    n = ctx.count(4, 8, minimum=2) if timing == "-T1" else ctx.count(80, 250, minimum=10)
    pick = sorted(set([22, 80, 443] + ctx.rng.sample(range(1, 10000), k=n)))
    _nmap_with(ctx, ["-sS", "-Pn", "-p", ",".join(map(str, pick))], timing,
               timeout=150 if timing == "-T1" else 130)


def _mac(ctx: Context, role: str) -> str:
    out = sh(["ip", "-n", ctx.net.hosts[role].ns, "link", "show", "eth0"]).stdout
    m = re.search(r"link/ether ([0-9a-f:]{17})", out)
    if not m:
        raise ScenarioError(f"no MAC address on {role}'s eth0")
    return m.group(1)


@scenario("scan-masscan", "threat", "masscan stateless SYN scan of the server at a drawn rate (sometimes --banners)",
          needs=("masscan", "nginx"))
def scan_masscan(ctx: Context) -> None:
    ctx.rule(SCAN, client=ctx.atk.ip, what="masscan")
    ctx.rule(SCAN, client=ctx.target(MASSCAN_SPOOF), what="masscan with its own address")
    site = _targets(ctx)
    # masscan keeps no kernel socket: it needs the next hop's MAC (the server, on the same LAN).
    rate = ctx.choice([100, 500, 1000, 3000, 10000])
    hi = ctx.count(500, 4000, minimum=100)
    argv = ["masscan", ctx.target(ctx.srv.ip), "-p", f"1-{hi}", "--rate", str(rate), "--wait", str(ctx.rng.randint(1, 4)),
            "-e", "eth0", "--router-mac", _mac(ctx, "srv"), "--seed", str(ctx.rng.randrange(10**6))]
    banners = ctx.rng.random() < 0.5
    if banners:
        # Banner grabbing needs an address the kernel does not own (else the kernel resets masscan's connections).
        argv += ["--banners", "--adapter-ip", MASSCAN_SPOOF, "-p", "21,22,80,443"]
        ctx.notes.append("masscan --banners from " + MASSCAN_SPOOF)
        # The server's half-closed connections to that address would retransmit into the next
        # scenario's capture once masscan is gone: drop them when this scenario ends.
        ctx.cleanups.append(lambda: sh(["ip", "netns", "exec", ctx.srv.ns, "ss", "-K", "dst", MASSCAN_SPOOF],
                                       check=False))
    else:
        argv += ["--adapter-ip", ctx.atk.ip]
    if ctx.rng.random() < 0.3:
        argv += ["--ttl", str(ctx.choice([32, 64, 128, 255]))]
    ctx.notes.append(f"masscan rate {rate} ports 1-{hi}")
    with Browsing(ctx, site):
        ctx.pause(0.5, 2.0)
        # With --banners masscan waits on its connections past --wait: the timeout ends it.
        ctx.client("atk", argv, timeout=hi / rate + (25 if banners else 60))
        ctx.pause(0.5, 2.0)


@scenario("scan-sip", "threat", "SIPVicious svmap (SIP device scan) and svwar (extension enumeration) against Kamailio",
          needs=("svmap", "svwar", "kamailio"))
def scan_sip(ctx: Context) -> None:
    from multa_broker.lab.servers import kamailio
    ctx.rule(SCAN, client=ctx.atk.ip, what="sipvicious")
    kamailio(ctx, ctx.srv.ip)
    method = ctx.choice(["OPTIONS", "INVITE", "REGISTER"])
    target = ctx.choice([ctx.srv.ip, "10.77.0.0/26", "10.77.0.0/24"])
    ctx.client("atk", ["svmap", "-m", method, "-p", ctx.choice(["5060", "5060-5070", "5060,5061,5080"]),
                       "-t", str(ctx.choice([0.01, 0.05, 0.2])), ctx.target(target)], timeout=120)
    if ctx.rng.random() < 0.7:
        lo = ctx.rng.randint(100, 900)
        ctx.client("atk", ["svwar", "-m", ctx.choice(["REGISTER", "INVITE", "OPTIONS"]),
                           "-e", f"{lo}-{lo + ctx.count(50, 300, minimum=10)}", "-t", "0.02", "--force",
                           ctx.target(ctx.srv.ip)], timeout=120)
    ctx.notes.append(f"svmap -m {method} {target}")
