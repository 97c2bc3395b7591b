"""More benign scenarios: databases, Windows file sharing, remote access, network management, IMAP/POP3,
a second and third web server and two more DNS servers. Real Debian servers, real clients, seeded workloads.
"""

from __future__ import annotations

from multa_broker.lab.benign import DB, DNS, HTTP, TLS, _mail_body, curl_session, dns_side_rule
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.mailservers import dovecot
from multa_broker.lab.network import RESOLVER
from multa_broker.lab.scenario import Context, find_tool, scenario
from multa_broker.lab.servers import (CHRONYD, PG_BIN, apache, chronyd, lighttpd, mariadb, named, need_user,
                                      postgres, rsyslogd, samba, snmpd, telnetd, unbound, xvnc)
from multa_broker.lab.services import LAB_DOMAIN, resolver, web_content

WINDOWS = Labels("windows", "cleartext", "none", "benign")
WINDOWS_ENC = Labels("windows", "encrypted", "none", "benign")
REMOTE = Labels("remote", "cleartext", "none", "benign")
NETMGMT = Labels("netmgmt", "cleartext", "none", "benign")
NETMGMT_ENC = Labels("netmgmt", "encrypted", "none", "benign")
MAIL = Labels("mail", "cleartext", "none", "benign")

PY = "/usr/bin/python3"


# -- databases -------------------------------------------------------------------------------------

def _pg_sql(ctx: Context) -> str:
    n = ctx.rng.randint(1, 8)
    stmts = ["CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, name text, body text, n int);"]
    for _ in range(n):
        k = ctx.rng.random()
        if k < 0.35:
            rows = ctx.rng.randint(1, 40)
            stmts.append("INSERT INTO items (name, body, n) SELECT 'x' || g, repeat('b', "
                         f"{ctx.size(1, 4000)}), g FROM generate_series(1, {rows}) g;")
        elif k < 0.7:
            stmts.append(f"SELECT id, name, length(body) FROM items ORDER BY id DESC LIMIT {ctx.rng.randint(1, 200)};")
        elif k < 0.85:
            stmts.append(f"UPDATE items SET n = n + 1 WHERE id % {ctx.rng.randint(2, 9)} = 0;")
        else:
            stmts.append("SELECT count(*), avg(length(body)) FROM items;")
    return " ".join(stmts)


@scenario("postgres", "benign", "PostgreSQL 15 + psql queries and pgbench (password logins, no TLS)",
          needs=("runuser", str(PG_BIN / "postgres"), str(PG_BIN / "initdb"), "psql"),
          check=lambda: need_user("postgres"))
def postgres_scn(ctx: Context) -> None:
    ctx.rule(DB, server=ctx.srv.ip, ports=ports(5432), protos=("tcp",), what="postgres")
    acct = postgres(ctx, ctx.srv.ip)
    env = dict(ctx.procs.env, PGPASSWORD=acct.password, PGCONNECT_TIMEOUT="10")
    base = ["-h", ctx.srv.ip, "-U", acct.user, "-d", acct.user]
    pgbench_ready = False
    for _ in range(ctx.count(10, 25, minimum=2)):
        if ctx.rng.random() < 0.2 and find_tool(str(PG_BIN / "pgbench")):
            if not pgbench_ready:
                ctx.client("cli", [PG_BIN / "pgbench", "-i", "-s", "1", "-q", *base], timeout=120, ok=True, env=env)
                pgbench_ready = True
            ctx.client("cli", [PG_BIN / "pgbench", "-c", str(ctx.rng.randint(1, 4)), "-t", str(ctx.count(10, 60)),
                               *(["-S"] if ctx.rng.random() < 0.5 else []), *base], timeout=120, ok=True, env=env)
        else:
            ctx.client("cli", ["psql", *base, "-q", "-v", "ON_ERROR_STOP=1", "-c", _pg_sql(ctx)],
                       timeout=60, ok=True, env=env)
        ctx.pause(0.1, 1.5)


@scenario("mariadb", "benign", "MariaDB 10.11 + mariadb client queries, mariadb-slap and mariadb-dump (no TLS)",
          needs=("mariadb-install-db", "mariadbd", "mariadb"))
def mariadb_scn(ctx: Context) -> None:
    ctx.rule(DB, server=ctx.srv.ip, ports=ports(3306), protos=("tcp",), what="mariadb")
    acct = mariadb(ctx, ctx.srv.ip)
    base = ["--no-defaults", "-h", ctx.srv.ip, "-P", "3306", "-u", acct.user, f"-p{acct.password}"]
    ctx.client("cli", ["mariadb", *base, "app", "-e",
                       "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64), body MEDIUMTEXT, n INT)"],
               timeout=30, ok=True)
    for _ in range(ctx.count(10, 25, minimum=2)):
        k = ctx.rng.random()
        if k < 0.15 and find_tool("mariadb-slap"):
            ctx.client("cli", ["mariadb-slap", *base, "--create-schema=slap", "--auto-generate-sql",
                               f"--concurrency={ctx.rng.randint(1, 4)}", f"--number-of-queries={ctx.count(20, 150)}",
                               f"--auto-generate-sql-load-type={ctx.choice(['read', 'write', 'mixed'])}"],
                       timeout=120, ok=True)
        elif k < 0.25 and find_tool("mariadb-dump"):
            ctx.client("cli", ["mariadb-dump", *base, "app"], timeout=60, ok=True)
        else:
            stmts = []
            for _ in range(ctx.rng.randint(1, 8)):
                if ctx.rng.random() < 0.4:
                    stmts.append(f"INSERT INTO items (name, body, n) VALUES ('r{ctx.rng.randrange(999)}', "
                                 f"REPEAT('b', {ctx.size(1, 5000)}), {ctx.rng.randrange(100)})")
                else:
                    stmts.append(f"SELECT id, name, LENGTH(body) FROM items ORDER BY id DESC LIMIT {ctx.rng.randint(1, 100)}")
            ctx.client("cli", ["mariadb", *base, "--connect-timeout=10", "app", "-e", "; ".join(stmts)],
                       timeout=60, ok=True)
        ctx.pause(0.1, 1.5)


# -- windows -------------------------------------------------------------------------------------------

@scenario("smb", "benign", "Samba smbd + smbclient/smbget file transfers and rpcclient DCE-RPC calls over SMB2/3",
          needs=("smbd", "smbclient", "rpcclient", "pdbedit"))
def smb(ctx: Context) -> None:
    # One choice per run: SMB3 encryption requested by every client, or none (signing only).
    encrypt = ctx.rng.random() < 0.3
    ctx.rule(WINDOWS_ENC if encrypt else WINDOWS, server=ctx.srv.ip, ports=ports(445), protos=("tcp",),
             what="smbd" + (" (SMB3 encryption)" if encrypt else ""))
    acct, files = samba(ctx, ctx.srv.ip)
    auth = f"{acct.user}%{acct.password}"
    enc = ["-e"] if encrypt else []
    up = ctx.blob("smb-upload.bin", ctx.size(1_000, 1_000_000))
    for i in range(ctx.count(8, 20, minimum=2)):
        proto = ctx.choice(["SMB2", "SMB3", "SMB3"]) if not encrypt else "SMB3"
        k = ctx.rng.random()
        if k < 0.2:
            ctx.client("cli", ["rpcclient", "-U", auth, *enc, "-c",
                               ";".join(ctx.rng.sample(["srvinfo", "netshareenumall", "lsaquery", "enumdomusers",
                                                        "querydominfo", "getusername", "netsharegetinfo public"],
                                                       k=ctx.rng.randint(1, 4))), ctx.srv.ip], timeout=60, ok=True)
        elif k < 0.3:
            ctx.client("cli", ["smbclient", "-L", f"//{ctx.srv.ip}", "-U", auth, "-m", proto, *enc], timeout=60, ok=True)
        elif k < 0.45 and find_tool("smbget") and not encrypt:
            pick = ctx.choice(files)
            ctx.client("cli", ["smbget", "-q", "-a", "-o", str(ctx.path(f"smbget/{i}-{pick}")),
                               f"smb://{ctx.srv.ip}/public/{pick}"],
                       timeout=90, ok=True)
        else:
            share, user = (("home", ["-U", auth]) if ctx.rng.random() < 0.5 else ("public", ["-N"]))
            cmds = ["ls"]
            for f in ctx.rng.sample(files, k=ctx.rng.randint(1, min(3, len(files)))):
                if share == "public":
                    cmds.append(f"get {f} /dev/null")
            if share == "home":
                cmds += [f"put {up} up{i}.bin", "ls", f"get up{i}.bin /dev/null"]
            ctx.client("cli", ["smbclient", f"//{ctx.srv.ip}/{share}", *user, "-m", proto, *enc, "-c", "; ".join(cmds)],
                       timeout=90, ok=True)
        ctx.pause(0.2, 2.0)


# -- remote access ----------------------------------------------------------------------------------------

def telnet_session(ctx: Context, user: str, password: str, commands: list[str]) -> list[str]:
    """A telnet client session fed by a timed script (a person typing at a prompt)."""
    lines = [user, password, *commands, "exit"]
    steps = "; ".join(f"sleep {ctx.rng.uniform(0.3, 1.2):.2f}; printf '%s\\n' '{line}'" for line in lines)
    return ["sh", "-c", f"({steps}; sleep 1) | telnet -E {ctx.srv.ip} 23"]


@scenario("telnet", "benign", "inetutils telnetd (from inetutils-inetd) + telnet client sessions running commands",
          needs=("inetutils-inetd", "/usr/sbin/telnetd", "telnet", PY))
def telnet(ctx: Context) -> None:
    ctx.rule(REMOTE, server=ctx.srv.ip, ports=ports(23), protos=("tcp",), what="telnetd")
    acct = telnetd(ctx, ctx.srv.ip)
    cmds = ["uname -a", "ls -la", "cat log0.txt", "head -c 3000 log1.txt", "df -h", "uptime", "ps",
            "cat /etc/os-release", "id", "wc -c log2.txt", "tail -n 40 log3.txt"]
    for _ in range(ctx.count(8, 18, minimum=2)):
        r = ctx.client("cli", telnet_session(ctx, acct.user, acct.password,
                                             ctx.rng.sample(cmds, k=ctx.rng.randint(1, 5))), timeout=60)
        if "Last login" not in r.output:
            from multa_broker.lab.scenario import ScenarioError
            raise ScenarioError(f"telnet login failed: {r.output.strip()[-200:]}")
        ctx.pause(0.2, 2.0)


@scenario("vnc", "benign", "TigerVNC Xvnc + vncsnapshot framebuffer grabs (VNC password auth, several encodings)",
          needs=("Xvnc", "vncpasswd", "vncsnapshot"))
def vnc(ctx: Context) -> None:
    ctx.rule(REMOTE, server=ctx.srv.ip, ports=ports(5900), protos=("tcp",), what="Xvnc")
    acct = xvnc(ctx, ctx.srv.ip)
    pwfile = ctx.dir / "vnc" / "passwd"
    for i in range(ctx.count(8, 18, minimum=2)):
        argv = ["vncsnapshot", "-quiet", "-allowblank", "-passwd", pwfile, "-encodings",
                # (tight hangs on Xvnc's first empty update: not drawn.)
                ctx.choice(["hextile", "raw", "zlib", "copyrect zlib", "corre", "rre", "copyrect hextile"]),
                "-compresslevel", str(ctx.rng.randint(0, 9)), "-quality", str(ctx.rng.randint(0, 9))]
        # (No -count: later grabs wait for screen updates, and the lab's desktop does not change.)
        if ctx.rng.random() < 0.3:
            argv += ["-rect", f"{ctx.rng.randint(100, 600)}x{ctx.rng.randint(100, 400)}+0+0"]
        ctx.client("cli", [*argv, f"{ctx.srv.ip}:0", str(ctx.path(f"vnc/snap{i}.jpg"))], timeout=30, ok=True)
        ctx.pause(0.2, 2.0)
    del acct


# -- network management -------------------------------------------------------------------------------------

@scenario("snmp", "benign", "net-snmp snmpd + snmpget/snmpwalk/snmpbulkwalk (v1, v2c; v3 authPriv on a second address)",
          needs=("snmpd", "snmpget", "snmpwalk", "snmpbulkwalk"))
def snmp(ctx: Context) -> None:
    from multa_broker.lab.servers import Account
    v3addr = ctx.srv.extra[0]
    ctx.rule(NETMGMT_ENC, server=v3addr, ports=ports(161), protos=("udp",), what="snmpd SNMPv3 authPriv")
    ctx.rule(NETMGMT, server=ctx.srv.ip, ports=ports(161), protos=("udp",), what="snmpd v1/v2c")
    v3 = Account("monitor", "authpass" + str(ctx.rng.randint(1000, 9999)))
    community = snmpd(ctx, [ctx.srv.ip, v3addr], v3=v3)
    subtrees = ["1.3.6.1.2.1.1", "1.3.6.1.2.1.2.2", "1.3.6.1.2.1.4.20", "1.3.6.1.2.1.25.1", "1.3.6.1.2.1.6",
                "1.3.6.1.2.1.7", "1.3.6.1.2.1.25.2", "1.3.6.1.2.1.31.1.1"]
    gets = ["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.2.1.0", "1.3.6.1.2.1.1.6.0"]
    common = ["-m", "", "-On", "-t", "2", "-r", "1"]
    for _ in range(ctx.count(15, 40, minimum=3)):
        k = ctx.rng.random()
        if k < 0.25:
            v3opts = ["-v3", "-l", "authPriv", "-u", v3.user, "-a", "SHA", "-A", v3.password, "-x", "AES",
                      "-X", v3.password + "x"]
            ctx.client("cli", [ctx.choice(["snmpwalk", "snmpget"]), *common, *v3opts, v3addr,
                               ctx.choice(subtrees[:3]) if ctx.rng.random() < 0.5 else ctx.choice(gets)],
                       timeout=60, ok=True)
        elif k < 0.55:
            ctx.client("cli", ["snmpget", *common, "-v", ctx.choice(["1", "2c"]), "-c", community, ctx.srv.ip,
                               *ctx.rng.sample(gets, k=ctx.rng.randint(1, 4))], timeout=30, ok=True)
        elif k < 0.8:
            ctx.client("cli", ["snmpwalk", *common, "-v", ctx.choice(["1", "2c"]), "-c", community, ctx.srv.ip,
                               ctx.choice(subtrees)], timeout=60, ok=True)
        else:
            ctx.client("cli", ["snmpbulkwalk", *common, "-v2c", "-c", community, "-Cr" + str(ctx.rng.randint(5, 40)),
                               ctx.srv.ip, ctx.choice(subtrees)], timeout=60, ok=True)
        ctx.pause(0.05, 1.0)


@scenario("syslog", "benign", "rsyslog receiving remote syslog (UDP and TCP 514) from logger, RFC 3164 and 5424",
          needs=("rsyslogd", "logger"))
def syslog(ctx: Context) -> None:
    ctx.rule(NETMGMT, server=ctx.srv.ip, ports=ports(514), protos=("udp", "tcp"), what="rsyslog")
    rsyslogd(ctx, ctx.srv.ip)
    apps = ["sshd", "cron", "kernel", "nginx", "postfix/smtpd", "dhclient", "systemd", "app"]
    msgs = ["connection from 10.77.0.20 port 5{n}", "session opened for user root", "link eth0 up",
            "GET /index.html 200 {n}", "queue active: {n} messages", "temperature {n} C", "disk usage {n}%"]
    for _ in range(ctx.count(10, 30, minimum=2)):
        tcp = ctx.rng.random() < 0.3
        lines = [ctx.choice(msgs).format(n=ctx.rng.randrange(1000)) + " " + "x" * ctx.size(1, 400)
                 for _ in range(ctx.rng.randint(1, 20))]
        argv = ["logger", "-n", ctx.srv.ip, "-P", "514", "-T" if tcp else "-d",
                ctx.choice(["--rfc3164", "--rfc5424", "--rfc5424=notq"]), "-t", ctx.choice(apps),
                "-p", ctx.choice(["user.info", "auth.notice", "daemon.warning", "local0.err", "kern.crit"])]
        if tcp and ctx.rng.random() < 0.5:
            argv.append("--octet-count")
        ctx.client("cli", argv, timeout=30, ok=True, input=("\n".join(lines) + "\n").encode())
        ctx.pause(0.05, 1.5)


# -- mail: IMAP and POP3 ---------------------------------------------------------------------------------------

IMAPLIB = r'''
import imaplib, poplib, random, sys
proto, host, user, pw, seed = sys.argv[1:6]
rng = random.Random(seed)
if proto == "imap":
    m = imaplib.IMAP4(host, 143, timeout=20)
    m.login(user, pw)
    m.list()
    typ, data = m.select("INBOX", readonly=rng.random() < 0.5)
    ids = m.search(None, "ALL")[1][0].split()
    for i in rng.sample(ids, k=min(len(ids), rng.randint(1, 6))):
        m.fetch(i, rng.choice(["(RFC822)", "(BODY.PEEK[HEADER])", "(FLAGS ENVELOPE)", "(BODY.PEEK[TEXT])"]))
    if rng.random() < 0.3:
        m.noop()
    m.logout()
else:
    p = poplib.POP3(host, 110, timeout=20)
    p.user(user); p.pass_(pw)
    n = p.stat()[0]
    p.list()
    for i in rng.sample(range(1, n + 1), k=min(n, rng.randint(1, 5))):
        p.retr(i) if rng.random() < 0.7 else p.top(i, 5)
    p.quit()
'''


def _mail_clients(ctx: Context, proto: str) -> None:
    accts = dovecot(ctx, ctx.srv.ip)
    script = ctx.write("mailclient.py", IMAPLIB)
    port = 143 if proto == "imap" else 110
    for _ in range(ctx.count(10, 25, minimum=2)):
        a = ctx.choice(accts)
        if ctx.rng.random() < 0.5:
            ctx.client("cli", [PY, script, proto, ctx.srv.ip, a.user, a.password, str(ctx.rng.random())],
                       timeout=60, ok=True)
        else:
            url = f"{proto}://{ctx.srv.ip}:{port}/"
            if proto == "imap":
                url += ctx.choice(["", "INBOX", f"INBOX;UID={ctx.rng.randint(1, 5)}", "INBOX?ALL"])
            else:
                url += ctx.choice(["", str(ctx.rng.randint(1, 5))])
            ctx.client("cli", ["curl", "-s", "--fail", "--max-time", "30", "-u", f"{a.user}:{a.password}",
                               "-o", "/dev/null", url], timeout=40, ok=True)
        ctx.pause(0.2, 2.0)


@scenario("imap", "benign", "Dovecot IMAP + curl and Python imaplib clients (plaintext login, no TLS)",
          needs=("dovecot", "curl", PY), check=lambda: need_user("dovenull") or need_user("nobody"))
def imap(ctx: Context) -> None:
    ctx.rule(MAIL, server=ctx.srv.ip, ports=ports(143), protos=("tcp",), what="dovecot imap")
    _mail_clients(ctx, "imap")


@scenario("pop3", "benign", "Dovecot POP3 + curl and Python poplib clients (plaintext login, no TLS)",
          needs=("dovecot", "curl", PY), check=lambda: need_user("dovenull") or need_user("nobody"))
def pop3(ctx: Context) -> None:
    ctx.rule(MAIL, server=ctx.srv.ip, ports=ports(110), protos=("tcp",), what="dovecot pop3")
    _mail_clients(ctx, "pop3")


# -- web: Apache and lighttpd, more clients ----------------------------------------------------------------------

PYGET = r'''
import http.client, sys
host, port, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if tls:
    import ssl
    c = http.client.HTTPSConnection(host, port, timeout=30, context=ssl._create_unverified_context())
else:
    c = http.client.HTTPConnection(host, port, timeout=30)
for p in sys.argv[4:]:
    c.request("GET", p, headers={"User-Agent": "lab-python"})
    c.getresponse().read()
c.close()
'''


def _web_clients(ctx: Context, site, host: str, https: bool) -> None:
    script = ctx.write("pyget.py", PYGET)
    for _ in range(ctx.count(12, 30, minimum=2)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 6)))
        tls = https and ctx.rng.random() < 0.5
        scheme, port = ("https", 443) if tls else ("http", 80)
        k = ctx.rng.random()
        if k < 0.3:
            ctx.client("cli", [PY, script, host, str(port), "1" if tls else "0", *paths], timeout=90, ok=True)
        elif k < 0.45 and find_tool("wget"):
            ctx.client("cli", ["wget", "-q", "-O", "/dev/null", "--timeout=30", "--tries=1", "--no-check-certificate",
                               *[f"{scheme}://{host}{p}" for p in paths]], timeout=90, ok=True)
        elif k < 0.5 and find_tool("ab"):
            ctx.client("cli", ["ab", "-q", "-n", str(ctx.rng.randint(3, 15)), "-c", "1",
                               *(["-k"] if ctx.rng.random() < 0.5 else []), f"{scheme}://{host}:{port}{paths[0]}"],
                       timeout=90, ok=True)
        else:
            extra = ["-k"]
            if ctx.rng.random() < 0.2:
                # Apache refuses a TLS handshake offering ALPN "http/1.0": HTTP/1.0 clients send no ALPN.
                extra += ["--http1.0"] + (["--no-alpn"] if tls else [])
            if ctx.rng.random() < 0.2:
                extra += ["--limit-rate", f"{ctx.size(50, 2000)}k"]
            ctx.client("cli", curl_session(ctx, f"{scheme}://{host}", paths, extra), timeout=90, ok=True)
        if ctx.rng.random() < 0.15:
            ctx.client("cli", ["curl", "-s", "--fail", "-o", "/dev/null", "-u", f"{site.user}:{site.password}",
                               f"http://{host}{site.private}"], timeout=30, ok=True)
        ctx.pause(0.1, 1.5)


@scenario("apache", "benign", "Apache httpd 2.4 (event/worker/prefork, HTTP and TLS) + curl, wget, Python http.client, ab",
          needs=("apache2", "htpasswd", "curl", "openssl", PY), check=lambda: need_user("www-data"))
def apache_scn(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    ctx.rule(HTTP, server=addr, ports=ports(80), protos=("tcp",), what="apache2")
    ctx.rule(TLS, server=addr, ports=ports(443), protos=("tcp",), what="apache2 mod_ssl")
    dns_side_rule(ctx)
    site = web_content(ctx, hi=800_000)
    apache(ctx, site, addr, https=True)
    host = f"www2.{LAB_DOMAIN}" if resolver(ctx, {f"www2.{LAB_DOMAIN}": addr}) is not None else addr
    _web_clients(ctx, site, host, https=True)


@scenario("lighttpd", "benign", "lighttpd + curl, wget, Python http.client and ab clients",
          needs=("lighttpd", "curl", PY))
def lighttpd_scn(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    ctx.rule(HTTP, server=addr, ports=ports(80), protos=("tcp",), what="lighttpd")
    site = web_content(ctx, hi=800_000)
    lighttpd(ctx, site, addr)
    _web_clients(ctx, site, addr, https=False)


# -- DNS: Unbound and BIND ------------------------------------------------------------------------------------------

def _dns_data(ctx: Context) -> tuple[dict[str, str], dict[str, str]]:
    names = {f"h{i}.{LAB_DOMAIN}": f"10.77.{ctx.rng.randint(1, 99)}.{ctx.rng.randint(1, 254)}"
             for i in range(ctx.count(20, 60, minimum=5))}
    names[f"www.{LAB_DOMAIN}"] = ctx.srv.ip
    names[f"mail.{LAB_DOMAIN}"] = ctx.srv.ip
    names[f"mqtt.{LAB_DOMAIN}"] = ctx.srv.ip
    txt = {f"t{i}.{LAB_DOMAIN}": "x" * ctx.size(10, 240) for i in range(8)}
    return names, txt


def _dns_clients(ctx: Context, names: dict[str, str], txt: dict[str, str]) -> None:
    qnames = list(names) + list(txt) + [LAB_DOMAIN]
    for _ in range(ctx.count(40, 120, minimum=6)):
        name = ctx.choice(qnames) if ctx.rng.random() < 0.85 else f"nx{ctx.rng.randrange(10**6)}.{LAB_DOMAIN}"
        qtype = ctx.choice(["A", "A", "A", "AAAA", "TXT", "MX", "SRV", "ANY", "SOA", "NS"])
        k = ctx.rng.random()
        # NXDOMAIN and empty answers are answers: these clients exit non-zero for them, so no ok=True.
        if k < 0.2 and find_tool("host"):
            ctx.client("cli", ["host", "-W", "2", "-t", qtype, *(["-T"] if ctx.rng.random() < 0.1 else []),
                               name, RESOLVER], timeout=10)
        elif k < 0.35 and find_tool("nslookup"):
            ctx.client("cli", ["nslookup", f"-type={qtype}", "-timeout=2", name, RESOLVER], timeout=10)
        else:
            argv = ["dig", f"@{RESOLVER}", name, qtype, "+time=2", "+tries=3"]
            if ctx.rng.random() < 0.1:
                argv.append("+tcp")
            if ctx.rng.random() < 0.3:
                argv.append(ctx.choice(["+dnssec", "+nocookie", "+bufsize=512", "+noedns"]))
            ctx.client("cli", argv, timeout=10, ok=True)
        ctx.pause(0.02, 0.6)


@scenario("unbound", "benign", "Unbound serving lab.test from local data + dig, host and nslookup",
          needs=("unbound", "dig"))
def unbound_scn(ctx: Context) -> None:
    ctx.rule(DNS, server=RESOLVER, ports=ports(53), protos=("udp", "tcp"), what="unbound")
    names, txt = _dns_data(ctx)
    unbound(ctx, names, txt)
    _dns_clients(ctx, names, txt)


@scenario("bind", "benign", "BIND 9 authoritative for lab.test (recursion off) + dig, host and nslookup",
          needs=("named", "dig"))
def bind_scn(ctx: Context) -> None:
    ctx.rule(DNS, server=RESOLVER, ports=ports(53), protos=("udp", "tcp"), what="named")
    names, txt = _dns_data(ctx)
    named(ctx, names, txt)
    _dns_clients(ctx, names, txt)


__all__ = ["MAIL", "REMOTE", "WINDOWS", "NETMGMT", "telnet_session", "_mail_body"]


# -- DHCP -----------------------------------------------------------------------------------------------------------

@scenario("dhcp", "benign", "busybox udhcpd + udhcpc lease requests (DISCOVER/OFFER/REQUEST/ACK, varied client ids)",
          needs=("busybox",), check=lambda: None if _busybox_has("udhcpd", "udhcpc") else "busybox lacks udhcpd/udhcpc")
def dhcp(ctx: Context) -> None:
    # Broadcasts from 0.0.0.0 to 255.255.255.255 and the server's replies: matched by port, not address.
    ctx.rule(NETMGMT, ports=ports(67, 68), protos=("udp",), what="udhcpd/udhcpc")
    d = ctx.mkdir("dhcp")
    (d / "leases").touch()
    conf = ctx.write("dhcp/udhcpd.conf", "\n".join([
        "start 10.77.0.150", "end 10.77.0.199", "interface eth0", f"lease_file {d}/leases", f"pidfile {d}/udhcpd.pid",
        "opt subnet 255.255.255.0", f"opt dns {RESOLVER}", f"opt domain {LAB_DOMAIN}",
        f"opt lease {ctx.choice([120, 600, 3600, 86400])}", "max_leases 60", "auto_time 0"]) + "\n")
    ctx.daemon("srv", ["busybox", "udhcpd", "-f", conf], "udhcpd", listen=[("udp", ctx.srv.ip, 67)])
    for i in range(ctx.count(10, 25, minimum=2)):
        cid = "01" + "".join(f"{ctx.rng.randrange(256):02x}" for _ in range(6))
        argv = ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "2", "-A", "1",
                "-s", "/bin/true", "-C", "-x", f"0x3d:{cid}", "-x", f"hostname:host{ctx.rng.randrange(1000)}"]
        if ctx.rng.random() < 0.5:
            argv += ["-V", ctx.choice(["MSFT 5.0", "android-dhcp-13", "udhcp 1.35.0", "dhcpcd-9.4.1"])]
        if ctx.rng.random() < 0.3:
            argv += ["-O", ctx.choice(["dns", "domain", "ntpsrv", "router", "lease"])]
        ctx.client("cli", argv, timeout=30, ok=True)
        ctx.pause(0.2, 2.0)


def _busybox_has(*applets: str) -> bool:
    import subprocess
    try:
        out = subprocess.run(["busybox", "--list"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return all(a in out for a in applets)


# -- NTP ---------------------------------------------------------------------------------------------------------------

@scenario("ntp", "benign", "chronyd NTP server (local clock, never sets the system clock) + ntpdig, sntp and chronyd -Q",
          needs=(CHRONYD, "ntpdig"))
def ntp(ctx: Context) -> None:
    ctx.rule(NETMGMT, server=ctx.srv.ip, ports=ports(123), protos=("udp",), what="chronyd")
    chronyd(ctx, ctx.srv.ip)
    # None of these clients sets the clock: ntpdig and sntp only print the offset without -s/-S,
    # chronyd -Q only logs it.
    for i in range(ctx.count(10, 25, minimum=2)):
        k = ctx.rng.random()
        if k < 0.4:
            argv = ["ntpdig", "-t", "2", "-c", str(ctx.rng.randint(1, 4)), ctx.srv.ip]
        elif k < 0.7 and find_tool("sntp"):
            argv = ["sntp", "-t", "2", *(["-c"] if ctx.rng.random() < 0.3 else []), ctx.srv.ip]
        else:
            argv = [CHRONYD, "-Q", "-4", "-u", "root", "-f", "/dev/null", "-t", "20",
                    f"pidfile {ctx.dir}/chrony/q{i}.pid",
                    f"server {ctx.srv.ip} iburst maxsamples {ctx.rng.randint(1, 6)}"]
        ctx.client("cli", argv, timeout=30, ok=True)
        ctx.pause(0.2, 2.0)


# -- VoIP signalling -------------------------------------------------------------------------------------------------

VOIP = Labels("voip", "cleartext", "none", "benign")


@scenario("sip", "benign", "Kamailio SIP registrar/proxy + sipsak REGISTER/de-REGISTER (digest auth) and OPTIONS pings",
          needs=("kamailio", "sipsak"))
def sip(ctx: Context) -> None:
    from multa_broker.lab.servers import kamailio
    ctx.rule(VOIP, server=ctx.srv.ip, ports=ports(5060), protos=("udp", "tcp"), what="kamailio")
    # sipsak's own listening port (MESSAGE relayed back to the registered contact).
    ctx.rule(VOIP, server=ctx.cli.ip, ports=ports(range(5070, 5100)), protos=("udp", "tcp"), what="sipsak contact")
    acct = kamailio(ctx, ctx.srv.ip)
    users = [f"{ctx.rng.randint(100, 999)}" for _ in range(ctx.rng.randint(2, 5))]
    for _ in range(ctx.count(15, 35, minimum=3)):
        user = ctx.choice(users)
        lport = str(ctx.rng.randint(5070, 5099))
        tcp = ["-E", "tcp"] if ctx.rng.random() < 0.2 else []
        k = ctx.rng.random()
        # Over TCP, no fixed local port: sipsak binds it without SO_REUSEADDR, and the lab's client
        # namespace lives across a run's seeds, so a port an earlier sipsak closed sits in TIME_WAIT for
        # 60 s and the bind fails ("Address already in use": 3 of 7 runs with many TCP draws). Kamailio
        # answers over the client's own connection, so the contact port takes no connection anyway.
        base = ["sipsak", *([] if tcp else ["-l", lport]), "-H", ctx.cli.ip, *tcp, "-D", "2"]
        if k < 0.4:
            argv = [*base, "-U", "-C", f"sip:{user}@{ctx.cli.ip}:{lport}", "-x", str(ctx.choice([60, 600, 3600])),
                    "-a", acct.password, "-u", user, "-s", f"sip:{user}@{ctx.srv.ip}"]
            ok = True
        elif k < 0.75:
            argv = [*base, "-s", f"sip:{ctx.srv.ip}"]
            ok = True
        else:
            # A de-registration (expires 0). (sipsak's MESSAGE and INVITE modes, -M and -I, crash in
            # Debian's sipsak 0.9.8.1: no calls here.)
            argv = [*base, "-U", "-C", f"sip:{user}@{ctx.cli.ip}:{lport}", "-x", "0",
                    "-a", acct.password, "-u", user, "-s", f"sip:{user}@{ctx.srv.ip}"]
            ok = True
        ctx.client("cli", argv, timeout=20, ok=ok)
        ctx.pause(0.1, 1.5)


# -- mail: Postfix SMTP with AUTH --------------------------------------------------------------------------------

SMTPLIB = r'''
import smtplib, sys
from email.message import EmailMessage
host, user, pw, rcpt, body = sys.argv[1:6]
m = EmailMessage()
m["From"], m["To"], m["Subject"] = f"{user}@lab.test", rcpt, "lab note"
m.set_content(body)
with smtplib.SMTP(host, 25, timeout=20) as s:
    s.ehlo("cli.lab.test")
    if user != "-":
        s.login(user, pw)
    s.send_message(m)
'''


@scenario("postfix", "benign", "Postfix SMTP (SASL AUTH via Dovecot) + swaks and Python smtplib submissions",
          needs=("postfix", "dovecot", "swaks", PY), check=lambda: need_user("postfix") or need_user("dovenull"))
def postfix_scn(ctx: Context) -> None:
    from multa_broker.lab.mailservers import postfix
    ctx.rule(MAIL, server=ctx.srv.ip, ports=ports(25), protos=("tcp",), what="postfix")
    accts = dovecot(ctx, ctx.srv.ip, users=3, messages=(1, 2), sasl_port=12345)
    postfix(ctx, ctx.srv.ip, sasl_port=12345)
    script = ctx.write("smtpclient.py", SMTPLIB)
    for i in range(ctx.count(10, 25, minimum=2)):
        a = ctx.choice(accts)
        rcpt = f"box{ctx.rng.randrange(100)}@{LAB_DOMAIN}"
        body = _mail_body(ctx, ctx.size(20, 50_000))
        if ctx.rng.random() < 0.4:
            ctx.client("cli", [PY, script, ctx.srv.ip, a.user, a.password, rcpt, body], timeout=60, ok=True)
            continue
        argv = ["swaks", "--server", ctx.srv.ip, "--port", "25", "--timeout", "20", "--silent", "2",
                "--from", f"{a.user}@{LAB_DOMAIN}", "--to", rcpt, "--helo", f"cli.{LAB_DOMAIN}",
                "--h-Subject", f"report {i}", "--body", body]
        if ctx.rng.random() < 0.6:
            argv += ["--auth", ctx.choice(["LOGIN", "PLAIN"]), "--auth-user", a.user, "--auth-password", a.password]
        if ctx.rng.random() < 0.3:
            att = ctx.blob(f"mail/att{i}.bin", ctx.size(1_000, 1_000_000))
            argv += ["--attach-type", "application/octet-stream", "--attach", f"@{att}"]
        ctx.client("cli", argv, timeout=60, ok=True)
        ctx.pause(0.2, 2.0)
