"""Mail servers for the broader lab: Dovecot IMAP/POP3 (and SASL for Postfix) and Postfix SMTP.

As in :mod:`.servers`, configuration lives in the scenario's work folder, daemons bind only to lab
addresses (Dovecot's SASL listener to the server namespace's loopback) and run in the foreground.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from multa_broker.lab.network import sh
from multa_broker.lab.scenario import Context
from multa_broker.lab.servers import Account, _chown, _password
from multa_broker.lab.services import LAB_DOMAIN


# -- mail: Dovecot IMAP/POP3 -----------------------------------------------------------------------

def dovecot(ctx: Context, addr: str, users: int = 3, messages: tuple[int, int] = (5, 25),
            sasl_port: int | None = None) -> list[Account]:
    """Dovecot IMAP (143) and POP3 (110) on ``addr``, plaintext logins allowed, no TLS; seeded mailboxes."""
    from multa_broker.lab.benign import _mail_body
    d = ctx.mkdir("dovecot")
    accts = [Account(f"{n}", _password(ctx)) for n in ctx.rng.sample(["alice", "bob", "carol", "dave", "erin"], k=users)]
    ctx.write("dovecot/users", "".join(f"{a.user}:{{PLAIN}}{a.password}\n" for a in accts))
    for a in accts:
        md = ctx.mkdir(f"dovecot/mail/{a.user}/Maildir")
        for sub in ("cur", "new", "tmp"):
            ctx.mkdir(f"dovecot/mail/{a.user}/Maildir/{sub}")
        for i in range(ctx.count(*messages, minimum=2)):
            body = _mail_body(ctx, ctx.size(100, 80_000))
            msg = (f"From: user{ctx.rng.randrange(100)}@{LAB_DOMAIN}\r\nTo: {a.user}@{LAB_DOMAIN}\r\n"
                   f"Subject: note {i}\r\nDate: Mon, 1 Dec 2025 10:{i % 60:02d}:00 +0000\r\n"
                   f"Message-ID: <{ctx.rng.randrange(10**9)}@{LAB_DOMAIN}>\r\n\r\n{body}\r\n")
            (md / ctx.choice(["cur", "new"]) / f"{1764000000 + i}.M{i}P1.lab:2,").write_text(msg)
    _chown(d / "mail", "nobody")
    for sub in ("run", "state"):
        ctx.mkdir(f"dovecot/{sub}")
    sasl_listener = (f"  inet_listener sasl {{\n    address = 127.0.0.1\n    port = {sasl_port}\n  }}"
                     if sasl_port else "")
    conf = ctx.write("dovecot/dovecot.conf", f"""
protocols = imap pop3
listen = {addr}
base_dir = {d}/run
state_dir = {d}/state
instance_name = {ctx.name}
log_path = /dev/stderr
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = {ctx.choice(["0", "1s", "2s"])}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
pop3_uidl_format = %08Xu%08Xv
service imap-login {{
  inet_listener imap {{
    address = {addr}
    port = 143
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
{sasl_listener}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {addr}
    port = 110
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
    ctx.daemon("srv", ["dovecot", "-F", "-c", conf], "dovecot", listen=[("tcp", addr, 143), ("tcp", addr, 110)],
               wait=30)
    if sasl_port:
        # The auth process starts on demand: wait for its handshake so Postfix's first AUTH does not race it.
        probe = ("import socket,sys; s=socket.create_connection(('127.0.0.1', %d), 5); s.settimeout(10); "
                 "sys.exit(0 if s.recv(200).startswith(b'VERSION') else 1)") % sasl_port
        ctx.client("srv", ["/usr/bin/python3", "-c", probe], timeout=20, ok=True)
    return accts


# -- mail: Postfix SMTP (SASL through Dovecot) ---------------------------------------------------------------

POSTFIX_MASTER = """\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix(ctx: Context, addr: str, sasl_port: int | None = None) -> None:
    """Postfix on ``addr``:25 accepting mail for lab.test (then discarding it), no TLS; with ``sasl_port``,
    SMTP AUTH (PLAIN, LOGIN) checked by Dovecot's auth service on 127.0.0.1:``sasl_port``."""
    d = ctx.mkdir("postfix")
    etc = ctx.mkdir("postfix/etc")
    for sub in ("spool", "data"):
        ctx.mkdir(f"postfix/{sub}")
    sasl = ""
    if sasl_port:
        sasl = (f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{sasl_port}\n"
                "smtpd_sasl_security_options = noanonymous\nbroken_sasl_auth_clients = yes\n")
    (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{LAB_DOMAIN}
mydomain = {LAB_DOMAIN}
myorigin = {LAB_DOMAIN}
mydestination =
relay_domains = {LAB_DOMAIN}
relay_transport = discard:
default_transport = discard:
inet_interfaces = {addr}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_banner = $myhostname ESMTP
smtpd_tls_security_level = none
message_size_limit = 20480000
maillog_file = /dev/stdout
alias_maps =
alias_database =
biff = no
{sasl}""")
    (etc / "master.cf").write_text(POSTFIX_MASTER)
    ctx.client("srv", ["postfix", "-c", etc, "set-permissions"], timeout=60)
    ctx.cleanups.append(lambda: _stop_postfix(ctx, etc, d / "spool" / "pid" / "master.pid"))
    ctx.daemon("srv", ["postfix", "-c", etc, "start-fg"], "postfix", listen=[("tcp", addr, 25)], wait=40)


def _stop_postfix(ctx: Context, etc: Path, pidfile: Path) -> None:
    """Postfix's master leaves the process group the lab stops: stop it by its PID file.

    (Left running, it would keep port 25 and answer the next scenario's clients.)
    """
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    sh(["ip", "netns", "exec", ctx.srv.ns, "postfix", "-c", str(etc), "abort"], check=False)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(1)
