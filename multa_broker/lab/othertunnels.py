"""Tunnels that are not VPNs: SSH port forwarding, HTTP tunnels and ICMP tunnels, with HTTP inside.

Each carries real HTTP from curl to an nginx that listens only on the
server's loopback, so the inner connection never crosses the bridge: the
capture holds the outer connections only, and those are what get labelled
``other-tunnel``. Every tunnel session is started and stopped anew, so each
is new outer flows.
"""

from __future__ import annotations

from multa_broker.lab.benign import curl_allowance, curl_session
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.scenario import Context, ScenarioError, scenario
from multa_broker.lab.services import WebSite, nginx, ssh_opts, sshd, web_content

SSH_TUNNEL = Labels("ssh", "encrypted", "other-tunnel", "benign")
#: httptunnel sends the tunnelled bytes as HTTP request and response bodies, unencrypted.
HTTP_TUNNEL = Labels("http", "cleartext", "other-tunnel", "benign")
#: ptunnel-ng's payloads are the tunnelled bytes as they are (its password only authenticates);
#: ICMP echo (or its UDP mode) is no application service the taxonomy names, so service stays unknown.
ICMP_TUNNEL = Labels(None, "cleartext", "other-tunnel", "benign")

LOOPBACK = "127.0.0.1"


def _loopback_site(ctx: Context, hi: int) -> WebSite:
    """nginx on the server's loopback only: reachable through a tunnel, never across the bridge."""
    site = web_content(ctx, n=ctx.count(6, 14, minimum=3), hi=hi)
    nginx(ctx, site, LOOPBACK)
    return site


def _fetch(ctx: Context, site: WebSite, base: str, extra: list[str] | None = None,
           runs: tuple[int, int] = (1, 3)) -> None:
    """Inner traffic: a few curl runs, each several objects over one keep-alive connection."""
    for _ in range(ctx.count(*runs)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 5)))
        ctx.client("cli", curl_session(ctx, base, paths, extra), timeout=curl_allowance(paths), ok=True)
        ctx.pause(0.1, 1.0)


def _sessions(ctx: Context, lo: int, hi: int) -> range:
    return range(ctx.count(lo, hi, minimum=2))


@scenario("sshtunnel", "tunnel", "OpenSSH port forwarding (-L and -D SOCKS) carrying HTTP to the server's loopback",
          needs=("/usr/sbin/sshd", "ssh", "ssh-keygen", "nginx", "curl"))
def sshtunnel(ctx: Context) -> None:
    addr = ctx.srv.extra[0]
    ctx.rule(SSH_TUNNEL, server=addr, ports=ports(22), protos=("tcp",), what="ssh -L/-D to sshd")
    site = _loopback_site(ctx, hi=1_500_000)
    opts = ssh_opts(sshd(ctx, addr).client_key)
    for n in _sessions(ctx, 10, 20):
        lport = ctx.rng.randint(20000, 40000)
        socks = ctx.rng.random() < 0.4
        argv = ["ssh", *opts, "-N", "-o", "ExitOnForwardFailure=yes",
                "-c", ctx.choice(["aes128-ctr", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"])]
        if ctx.rng.random() < 0.3:
            argv.append("-C")
        if ctx.rng.random() < 0.5:
            # Keep-alives make the idle tunnel talk now and then, as long-lived forwards do.
            argv += ["-o", f"ServerAliveInterval={ctx.rng.randint(1, 5)}"]
        argv += ["-D", f"{LOOPBACK}:{lport}"] if socks else ["-L", f"{LOOPBACK}:{lport}:{LOOPBACK}:80"]
        tunnel = ctx.daemon("cli", [*argv, f"root@{ctx.target(addr)}"], f"ssh-tunnel{n}",
                            listen=[("tcp", LOOPBACK, lport)])
        if socks:
            # socks5h: the server side resolves and connects, so the inner target is its own loopback.
            _fetch(ctx, site, f"http://{LOOPBACK}", ["--socks5-hostname", f"{LOOPBACK}:{lport}"])
        else:
            _fetch(ctx, site, f"http://{LOOPBACK}:{lport}")
        ctx.pause(0.0, 3.0)  # idle time in the tunnel before it closes
        ctx.procs.stop(tunnel)
        ctx.pause(0.2, 1.5)


def _hts_opts(ctx: Context) -> list[str]:
    """httptunnel's knobs on one side: request body size, keep-alive padding, connection age."""
    opts = []
    if ctx.rng.random() < 0.6:
        opts += ["-c", ctx.choice(["10k", "50k", "100k", "500k"])]
    if ctx.rng.random() < 0.4:
        opts += ["-k", str(ctx.rng.randint(1, 10))]
    if ctx.rng.random() < 0.3:
        opts += ["-M", str(ctx.rng.randint(3, 20))]  # short-lived HTTP connections: more outer flows
    if ctx.rng.random() < 0.2:
        opts.append("-S")
    return opts


@scenario("httptunnel", "tunnel", "GNU httptunnel (hts/htc): TCP carried in HTTP request/response bodies, HTTP inside",
          needs=("hts", "htc", "nginx", "curl"))
def httptunnel(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    port = ctx.choice([8888, 8888, 80, 8080])
    ctx.rule(HTTP_TUNNEL, server=addr, ports=ports(port), protos=("tcp",), what="hts/htc")
    site = _loopback_site(ctx, hi=600_000)
    for n in _sessions(ctx, 10, 20):
        lport = ctx.rng.randint(20000, 40000)
        # hts serves one tunnel at a time and htc one forwarded connection: both are new per session.
        server = ctx.daemon("srv", ["hts", "-w", *_hts_opts(ctx), "-F", f"{LOOPBACK}:80", f"{addr}:{port}"],
                            f"hts{n}", listen=[("tcp", addr, port)])
        argv = ["htc", "-w", *_hts_opts(ctx), "-F", str(lport)]
        if ctx.rng.random() < 0.5:
            argv += ["-U", ctx.choice(["Mozilla/5.0 (X11; Linux x86_64)", "curl/7.88.1", "Wget/1.21.3"])]
        client = ctx.daemon("cli", [*argv, f"{ctx.target(addr)}:{port}"], f"htc{n}", listen=[("tcp", LOOPBACK, lport)])
        _fetch(ctx, site, f"http://{LOOPBACK}:{lport}", runs=(1, 1))
        ctx.pause(0.0, 2.0)
        ctx.procs.stop(client)
        ctx.procs.stop(server)
        ctx.pause(0.2, 1.0)


#: curl's exit status for a transfer cut short after some of its bytes arrived.
_CURL_PARTIAL = 18


def _fetch_lossy(ctx: Context, site: WebSite, base: str, session: int) -> None:
    """Inner fetches through ptunnel-ng, which now and then cuts a transfer short (curl status 18).

    A cut transfer (curl 18: fewer bytes than announced) was still carried by the tunnel, so it
    is noted and counts as getting through; a session where nothing got through fails the
    scenario (the tunnel did not work).
    """
    ok = 0
    for _ in range(ctx.count(1, 3)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 5)))
        r = ctx.client("cli", curl_session(ctx, base, paths), timeout=curl_allowance(paths))
        if r.returncode != 0:
            ctx.notes.append(f"ptunnel-ng session {session}: curl {'timed out' if r.timed_out else r.returncode}")
        if not r.timed_out and r.returncode in (0, _CURL_PARTIAL):
            ok += 1
        ctx.pause(0.1, 1.0)
    if not ok:
        raise ScenarioError(f"nothing got through ptunnel-ng in session {session}")


def _echo_ignore(ctx: Context) -> None:
    """Let only ptunnel-ng answer echo requests on the server (as its guide advises); undone afterwards."""
    knob = "net.ipv4.icmp_echo_ignore_all"
    ctx.client("srv", ["sysctl", "-qw", f"{knob}=1"], timeout=10, ok=True)

    def undo() -> None:
        # The lab network outlives this scenario: later ones expect the kernel to answer pings.
        ctx.procs.run(ctx.srv.ns, ["sysctl", "-qw", f"{knob}=0"], timeout=10)

    ctx.cleanups.append(undo)


@scenario("icmptunnel", "tunnel", "ptunnel-ng: TCP carried in ICMP echo (or its UDP mode), HTTP inside",
          needs=("ptunnel-ng", "sysctl", "nginx", "curl"))
def icmptunnel(ctx: Context) -> None:
    # The primary address: ptunnel-ng answers from a raw (or unbound UDP) socket, so its replies
    # leave from the address the route picks, and a request to another address would get them from this one.
    addr = ctx.srv.ip
    udp = ctx.rng.random() < 0.4
    if udp:
        # --udp: the same protocol in UDP datagrams to port 53 (it is not DNS).
        ctx.rule(ICMP_TUNNEL, server=addr, ports=ports(53), protos=("udp",), what="ptunnel-ng --udp")
    else:
        ctx.rule(ICMP_TUNNEL, server=addr, protos=("icmp",), what="ptunnel-ng")
        if ctx.rng.random() < 0.5:
            _echo_ignore(ctx)
    site = _loopback_site(ctx, hi=400_000)
    common = ["-v", "1", "-m", hex(ctx.rng.getrandbits(32)), "-P", f"lab{ctx.rng.randrange(10**8)}"]
    common += ["--udp"] if udp else []
    for n in _sessions(ctx, 4, 8):
        tune = ["-w", str(ctx.choice([16, 32, 64, 64, 128])), "-y", str(ctx.choice([512, 1024, 1024, 1400]))]
        lport = ctx.rng.randint(20000, 40000)
        server = ctx.daemon("srv", ["ptunnel-ng", *common, f"-r{LOOPBACK}", "-R80"], f"ptunnel-server{n}",
                            listen=[("udp", addr, 53)] if udp else [])
        if not udp:
            ctx.pause(0.5, 0.5)  # a raw ICMP socket shows in no socket table: give it a moment
        client = ctx.daemon("cli", ["ptunnel-ng", *common, *tune, "-p", ctx.target(addr), "-l", str(lport),
                                    f"-r{LOOPBACK}", "-R80"], f"ptunnel-client{n}", listen=[("tcp", LOOPBACK, lport)])
        _fetch_lossy(ctx, site, f"http://{LOOPBACK}:{lport}", n)
        ctx.procs.stop(client)
        ctx.procs.stop(server)
        ctx.pause(0.5, 2.0)
