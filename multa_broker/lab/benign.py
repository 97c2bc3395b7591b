"""Benign scenarios: real servers from Debian packages, real clients, seeded workloads."""

from __future__ import annotations

import subprocess

from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.network import RESOLVER
from multa_broker.lab.scenario import Context, find_tool, scenario
from multa_broker.lab.services import (FTP_PASV, LAB_DOMAIN, nginx, resolver, ssh_opts, sshd, vsftpd,
                                       web_content)

DNS = Labels("dns", "cleartext", "none", "benign")
HTTP = Labels("http", "cleartext", "none", "benign")
TLS = Labels("tls", "encrypted", "none", "benign")
SSH = Labels("ssh", "encrypted", "none", "benign")
FTP = Labels("ftp", "cleartext", "none", "benign")
MAIL = Labels("mail", "cleartext", "none", "benign")
IOT = Labels("iot", "cleartext", "none", "benign")
DB = Labels("database", "cleartext", "none", "benign")


def dns_side_rule(ctx: Context) -> None:
    """Lookups clients make on the way (curl resolving www.lab.test) are DNS, benign."""
    ctx.rule(DNS, server=RESOLVER, ports=ports(53), protos=("udp", "tcp"), what="lab resolver")


def web_name(ctx: Context, addr: str) -> str:
    """The name clients use for ``addr``: through the lab resolver when it runs, else the address."""
    if resolver(ctx, {f"www.{LAB_DOMAIN}": addr}) is not None:
        return f"www.{LAB_DOMAIN}"
    return addr


#: curl's --max-time in :func:`curl_session`, in seconds: it bounds each object of the run.
CURL_MAX_TIME = 60


def curl_session(ctx: Context, base: str, paths: list[str], extra: list[str] | None = None) -> list[str]:
    """One curl run fetching several objects over one keep-alive connection."""
    argv = ["curl", "-s", "--fail", "--max-time", str(CURL_MAX_TIME), *(extra or [])]
    for p in paths:
        argv += ["-o", "/dev/null", f"{base}{p}"]
    return argv


def curl_allowance(paths: list[str]) -> float:
    """Seconds a :func:`curl_session` run over ``paths`` may take: its --max-time bounds each
    object, so a slow path may use the whole allowance for every one."""
    return CURL_MAX_TIME * len(paths) + 30


@scenario("http", "benign", "nginx + curl/wget: pages and objects of varied sizes over keep-alive HTTP/1.x",
          needs=("nginx", "curl"))
def http(ctx: Context) -> None:
    ctx.rule(HTTP, server=ctx.srv.ip, ports=ports(80), protos=("tcp",), what="nginx")
    dns_side_rule(ctx)
    site = web_content(ctx, hi=800_000)
    nginx(ctx, site, ctx.srv.ip)
    host = web_name(ctx, ctx.srv.ip)
    for _ in range(ctx.count(12, 30, minimum=2)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 6)))
        style = ctx.rng.random()
        if style < 0.15 and find_tool("wget"):
            argv = ["wget", "-q", "-O", "/dev/null", "--timeout=30", "--tries=1", *[f"http://{host}{p}" for p in paths]]
        else:
            extra = []
            if style < 0.35:
                extra.append("--http1.0")  # one connection per object
            if ctx.rng.random() < 0.25:
                extra += ["--limit-rate", f"{ctx.size(50, 2000)}k"]
            argv = curl_session(ctx, f"http://{host}", paths, extra)
            if ctx.rng.random() < 0.2:
                # An upload: a POST first, then (--next) the GETs on the same connection.
                body = ctx.blob(f"post{ctx.rng.randrange(10**6)}.bin", ctx.size(100, 200_000))
                argv = ["curl", "-s", "--fail", "--max-time", "60", "--data-binary", f"@{body}",
                        "-o", "/dev/null", f"http://{host}{site.upload}", "--next", *argv[1:]]
        if ctx.rng.random() < 0.2:
            # A logged-in user reads the members' page.
            ctx.client("cli", ["curl", "-s", "--fail", "-o", "/dev/null", "-u", f"{site.user}:{site.password}",
                               f"http://{host}{site.private}"], timeout=30, ok=True)
        ctx.client("cli", argv, timeout=90, ok=True)
        ctx.pause(0.1, 1.5)


@scenario("https", "benign", "nginx TLS 1.2/1.3 (HTTP/1.1 and HTTP/2) + curl, self-signed certificate made at run time",
          needs=("nginx", "curl", "openssl"))
def https(ctx: Context) -> None:
    ctx.rule(TLS, server=ctx.srv.ip, ports=ports(443), protos=("tcp",), what="nginx TLS")
    dns_side_rule(ctx)
    site = web_content(ctx, hi=800_000)
    nginx(ctx, site, ctx.srv.ip, http=False, https=True)
    host = web_name(ctx, ctx.srv.ip)
    resolve = [] if host != ctx.srv.ip else ["--resolve", f"www.{LAB_DOMAIN}:443:{ctx.srv.ip}"]
    for _ in range(ctx.count(12, 30, minimum=2)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 6)))
        extra = ["-k", *resolve, ctx.choice(["--http1.1", "--http2", "--http2"])]
        if ctx.rng.random() < 0.3:
            extra += ["--tls-max", "1.2"]
        if ctx.rng.random() < 0.2:
            extra += ["--limit-rate", f"{ctx.size(50, 2000)}k"]
        ctx.client("cli", curl_session(ctx, f"https://www.{LAB_DOMAIN}", paths, extra), timeout=90, ok=True)
        ctx.pause(0.1, 1.5)


@scenario("dns", "benign", "dnsmasq authoritative for lab.test + dig (UDP and TCP, many record types)",
          needs=("dnsmasq", "dig"))
def dns(ctx: Context) -> None:
    from multa_broker.lab.services import dnsmasq
    ctx.rule(DNS, server=RESOLVER, ports=ports(53), protos=("udp", "tcp"), what="dnsmasq")
    names = [f"h{i}.{LAB_DOMAIN}" for i in range(ctx.count(20, 60, minimum=5))]
    lines = [f"host-record={n},10.77.{ctx.rng.randint(1, 99)}.{ctx.rng.randint(1, 254)}" for n in names]
    lines += [f"txt-record=t{i}.{LAB_DOMAIN},\"{'x' * ctx.size(10, 240)}\"" for i in range(8)]
    lines += [f"mx-host={LAB_DOMAIN},mail.{LAB_DOMAIN},10", f"cname=www.{LAB_DOMAIN},{names[0]}",
              f"srv-host=_mqtt._tcp.{LAB_DOMAIN},{names[1]},1883"]
    dnsmasq(ctx, lines)
    qnames = names + [f"t{i}.{LAB_DOMAIN}" for i in range(8)] + [f"www.{LAB_DOMAIN}", LAB_DOMAIN]
    for _ in range(ctx.count(40, 120, minimum=6)):
        name = ctx.choice(qnames) if ctx.rng.random() < 0.85 else f"nx{ctx.rng.randrange(10**6)}.{LAB_DOMAIN}"
        qtype = ctx.choice(["A", "A", "A", "AAAA", "TXT", "MX", "SRV", "ANY", "CNAME"])
        # Three tries: a drawn path loss (Conditions.with_path) must not fail the run.
        argv = ["dig", f"@{RESOLVER}", name, qtype, "+time=2", "+tries=3"]
        if ctx.rng.random() < 0.1:
            argv.append("+tcp")
        if ctx.rng.random() < 0.3:
            argv.append("+dnssec")
        ctx.client("cli", argv, timeout=10, ok=True)
        ctx.pause(0.02, 0.6)


@scenario("ssh", "benign", "OpenSSH server + ssh commands and scp transfers with keys made at run time",
          needs=("/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"))
def ssh(ctx: Context) -> None:
    ctx.rule(SSH, server=ctx.srv.ip, ports=ports(22), protos=("tcp",), what="sshd")
    setup = sshd(ctx, ctx.srv.ip)
    opts = ssh_opts(setup.client_key)
    up = ctx.blob("ssh/upload.bin", ctx.size(2_000, 1_500_000))
    ctx.blob("ssh/download.bin", ctx.size(2_000, 1_500_000))
    for _ in range(ctx.count(8, 20, minimum=2)):
        cipher = ctx.choice(["aes128-ctr", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
        copts = [*opts, "-c", cipher] + (["-C"] if ctx.rng.random() < 0.3 else [])
        kind = ctx.rng.random()
        if kind < 0.4:
            cmd = ctx.choice(["uname -a", "ls -la /usr/share/doc | head -50", "cat /etc/os-release",
                              f"head -c {ctx.size(100, 500_000)} /dev/urandom | base64", "df -h; uptime"])
            ctx.client("cli", ["ssh", *copts, f"root@{ctx.srv.ip}", cmd], timeout=60, ok=True)
        elif kind < 0.7:
            ctx.client("cli", ["scp", *copts, "-q", str(up), f"root@{ctx.srv.ip}:{ctx.dir}/ssh/uploaded.bin"],
                       timeout=90, ok=True)
        else:
            ctx.client("cli", ["scp", *copts, "-q", f"root@{ctx.srv.ip}:{ctx.dir}/ssh/download.bin", "/dev/null"],
                       timeout=90, ok=True)
        ctx.pause(0.2, 2.0)


@scenario("ftp", "benign", "vsftpd anonymous downloads, passive and active mode, with curl and lftp",
          needs=("vsftpd", "curl"))
def ftp(ctx: Context) -> None:
    ctx.rule(FTP, server=ctx.srv.ip, ports=ports(21, 20, FTP_PASV), protos=("tcp",), what="vsftpd")
    _, files = vsftpd(ctx, ctx.srv.ip)
    for _ in range(ctx.count(6, 14, minimum=2)):
        pick = ctx.rng.sample(files, k=ctx.rng.randint(1, min(3, len(files))))
        if find_tool("lftp") and ctx.rng.random() < 0.35:
            cmds = f"set net:timeout 10; set net:max-retries 1; set ftp:passive-mode {ctx.choice(['on', 'off'])}; " \
                   f"open ftp://anonymous:lab@{ctx.srv.ip}; ls pub; " + "; ".join(f"cat {f} > /dev/null" for f in pick)
            ctx.client("cli", ["lftp", "-c", cmds], timeout=90, ok=True)
        else:
            argv = ["curl", "-s", "--fail", "--max-time", "60"]
            if ctx.rng.random() < 0.3:
                argv += ["-P", "-"]  # active mode: the server connects back from port 20
            for f in pick:
                argv += ["-o", "/dev/null", f"ftp://{ctx.srv.ip}/{f}"]
            ctx.client("cli", argv, timeout=90, ok=True)
        ctx.pause(0.2, 2.0)


def _aiosmtpd_missing() -> str | None:
    py = "/usr/bin/python3"
    try:
        ok = subprocess.run([py, "-c", "import aiosmtpd"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return None if ok else "missing python3-aiosmtpd (install with `multa lab setup`)"


def _mail_body(ctx: Context, size: int) -> str:
    """Text of about ``size`` bytes in lines of at most 76 characters, as mail clients write it."""
    words = ["lab", "report", "status", "sensor", "value", "meeting", "invoice", "update", "the", "of", "and"]
    lines, line, total = [], [], 0
    while total < size:
        w = ctx.choice(words)
        if sum(len(x) + 1 for x in line) + len(w) > 76:
            lines.append(" ".join(line))
            line = []
        line.append(w)
        total += len(w) + 1
    lines.append(" ".join(line))
    return "\n".join(lines)


@scenario("smtp", "benign", "aiosmtpd SMTP server + swaks messages with bodies and attachments of varied sizes",
          needs=("swaks", "/usr/bin/python3"), check=_aiosmtpd_missing)
def smtp(ctx: Context) -> None:
    ctx.rule(MAIL, server=ctx.srv.ip, ports=ports(25), protos=("tcp",), what="aiosmtpd")
    ctx.daemon("srv", ["/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", f"{ctx.srv.ip}:25",
                       "-c", "aiosmtpd.handlers.Sink"], "aiosmtpd", listen=[("tcp", ctx.srv.ip, 25)])
    for i in range(ctx.count(10, 25, minimum=2)):
        argv = ["swaks", "--server", ctx.srv.ip, "--port", "25", "--timeout", "20",
                "--from", f"user{ctx.rng.randrange(100)}@{LAB_DOMAIN}", "--to", f"box{ctx.rng.randrange(100)}@{LAB_DOMAIN}",
                "--helo", f"cli.{LAB_DOMAIN}", "--h-Subject", f"report {i}", "--silent", "2",
                "--body", _mail_body(ctx, ctx.size(20, 50_000))]
        if ctx.rng.random() < 0.4:
            att = ctx.blob(f"mail/att{i}.bin", ctx.size(1_000, 1_000_000))
            argv += ["--attach-type", "application/octet-stream", "--attach", f"@{att}"]
        ctx.client("cli", argv, timeout=60, ok=True)
        ctx.pause(0.2, 2.0)


@scenario("mqtt", "benign", "mosquitto broker + mosquitto_sub subscribers and mosquitto_pub sensors",
          needs=("mosquitto", "mosquitto_pub", "mosquitto_sub"))
def mqtt(ctx: Context) -> None:
    ctx.rule(IOT, server=ctx.srv.ip, ports=ports(1883), protos=("tcp",), what="mosquitto")
    conf = ctx.write("mosquitto.conf", f"listener 1883 {ctx.srv.ip}\nallow_anonymous true\npersistence false\n"
                                       "log_dest stderr\nuser root\n")
    ctx.daemon("srv", ["mosquitto", "-c", conf], "mosquitto", listen=[("tcp", ctx.srv.ip, 1883)])
    total = ctx.count(15, 40, minimum=3)
    sub = ctx.procs.start(ctx.cli.ns, ["mosquitto_sub", "-h", ctx.srv.ip, "-t", "lab/#", "-q", "1",
                                       "-C", str(total), "-W", str(int(60 + total * 3)), "-k", str(ctx.rng.randint(5, 30))],
                          f"{ctx.name}-mosquitto_sub")
    for i in range(total):
        sensor = f"lab/sensor/{ctx.rng.randrange(20)}"
        payload = '{"v": %s, "pad": "%s"}' % (ctx.rng.random(), "x" * ctx.size(1, 2000))
        argv = ["mosquitto_pub", "-h", ctx.srv.ip, "-t", sensor, "-q", str(ctx.choice([0, 1, 2])), "-m", payload]
        if ctx.rng.random() < 0.3:
            argv += ["-r"]
        ctx.client("cli", argv, timeout=20, ok=True)
        ctx.pause(0.05, 1.0)
    try:
        sub.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    ctx.procs.stop(sub)


@scenario("redis", "benign", "redis-server + redis-cli commands and a small redis-benchmark (database protocol)",
          needs=("redis-server", "redis-cli"))
def redis(ctx: Context) -> None:
    ctx.rule(DB, server=ctx.srv.ip, ports=ports(6379), protos=("tcp",), what="redis")
    ctx.daemon("srv", ["redis-server", "--bind", ctx.srv.ip, "--port", "6379", "--protected-mode", "no",
                       "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(ctx.dir)],
               "redis", listen=[("tcp", ctx.srv.ip, 6379)])
    cli = ["redis-cli", "-h", ctx.srv.ip, "-p", "6379"]
    for i in range(ctx.count(10, 25, minimum=2)):
        cmds = []
        for j in range(ctx.rng.randint(1, 20)):
            op = ctx.choice(["SET", "GET", "LPUSH", "HSET", "INCR", "LRANGE"])
            k = f"k{ctx.rng.randrange(50)}"
            if op == "SET":
                cmds.append(f"SET {k} {'v' * ctx.size(1, 20000)}")
            elif op == "GET":
                cmds.append(f"GET {k}")
            elif op == "LPUSH":
                cmds.append(f"LPUSH l{k} {'e' * ctx.size(1, 500)}")
            elif op == "HSET":
                cmds.append(f"HSET h{k} f{j} {ctx.rng.random()}")
            elif op == "INCR":
                cmds.append(f"INCR c{k}")
            else:
                cmds.append(f"LRANGE l{k} 0 -1")
        # One connection per batch, commands pipelined from stdin.
        ctx.client("cli", cli, timeout=30, ok=True, input=("\n".join(cmds) + "\n").encode())
        ctx.pause(0.1, 1.5)
    if find_tool("redis-benchmark") and ctx.rng.random() < 0.6:
        ctx.client("cli", ["redis-benchmark", "-h", ctx.srv.ip, "-n", str(ctx.count(100, 600, minimum=20)),
                           "-c", str(ctx.rng.randint(1, 4)), "-d", str(ctx.size(3, 4000)), "-q",
                           "-t", ctx.choice(["set,get", "lpush,lpop", "incr,get"])], timeout=60, ok=True)
