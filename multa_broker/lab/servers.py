"""More real servers for the broader lab: databases, Samba, Telnet, VNC, SNMP, NTP, syslog, Apache,
lighttpd, Unbound, BIND and Kamailio (mail servers are in :mod:`.mailservers`).

Like :mod:`.services`, each helper writes its own configuration into the
scenario's work folder, binds only to lab addresses, runs in the foreground
(its PID is the one the lab stops) and never touches the system's own
configuration or data folders.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from multa_broker.lab.network import RESOLVER
from multa_broker.lab.procs import Daemon
from multa_broker.lab.scenario import Context, ScenarioError, find_tool
from multa_broker.lab.services import LAB_DOMAIN, WebSite

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Account:
    """One valid login on a lab service (the brute-force scenarios put it in their wordlists)."""

    user: str
    password: str


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def _password(ctx: Context) -> str:
    return ctx.choice(["sunshine42", "Winter2024!", "labpass77", "correct-horse", "qwe123rty"])


# -- databases -----------------------------------------------------------------------------------

def postgres(ctx: Context, addr: str) -> Account:
    """PostgreSQL 15 on ``addr``:5432 (no TLS), password logins (md5 or SCRAM, drawn) from the lab."""
    d = ctx.mkdir("pg", 0o700)
    data = d / "data"
    acct = Account("app", _password(ctx))
    su_pw = ctx.write("pg/pw", "lab-superuser\n", 0o600)
    _chown(d, "postgres")
    run = ["runuser", "-u", "postgres", "--"]
    method = ctx.choice(["md5", "scram-sha-256"])
    ctx.client("srv", [*run, PG_BIN / "initdb", "-D", data, "-U", "postgres", f"--pwfile={su_pw}",
                       "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"], timeout=120, ok=True)
    (data / "pg_hba.conf").write_text(f"local all all trust\nhost all all 10.77.0.0/16 {method}\n")
    sock = d / "sock"
    sock.mkdir()
    _chown(d, "postgres")
    ctx.daemon("srv", [*run, PG_BIN / "postgres", "-D", data, "-c", f"listen_addresses={addr}", "-c", "port=5432",
                       "-c", f"unix_socket_directories={sock}", "-c", "ssl=off", "-c", "fsync=off",
                       "-c", "shared_buffers=16MB", "-c", "max_connections=80", "-c", f"password_encryption={method}",
                       "-c", "logging_collector=off", "-c", "log_connections=off"],
               "postgres", listen=[("tcp", addr, 5432)], wait=60)
    # Two -c: CREATE DATABASE cannot share a transaction with another statement.
    ctx.client("srv", [*run, PG_BIN / "psql", "-h", sock, "-U", "postgres", "-d", "postgres", "-q",
                       "-v", "ON_ERROR_STOP=1", "-c", f"CREATE ROLE {acct.user} LOGIN PASSWORD '{acct.password}'",
                       "-c", f"CREATE DATABASE {acct.user} OWNER {acct.user}"], timeout=60, ok=True)
    ctx.notes.append(f"postgres auth {method}")
    return acct


def mariadb(ctx: Context, addr: str) -> Account:
    """MariaDB 10.11 on ``addr``:3306 (no TLS), mysql_native_password logins."""
    d = ctx.mkdir("mariadb", 0o755)
    data = d / "data"
    acct = Account("app", _password(ctx))
    ctx.client("srv", ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                       "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=180, ok=True)
    sock = d / "mysqld.sock"
    ctx.daemon("srv", ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}",
                       f"--pid-file={d}/mysqld.pid", f"--bind-address={addr}", "--port=3306", "--user=root",
                       "--skip-name-resolve", "--innodb-buffer-pool-size=16M", "--skip-log-bin",
                       f"--log-error={d}/error.log", "--max-connections=120", "--ssl=0"],
               "mariadbd", listen=[("tcp", addr, 3306)], wait=60)
    sql = (f"CREATE DATABASE app; CREATE USER '{acct.user}'@'%' IDENTIFIED BY '{acct.password}'; "
           f"GRANT ALL ON app.* TO '{acct.user}'@'%'; GRANT ALL ON slap.* TO '{acct.user}'@'%'; FLUSH PRIVILEGES;")
    ctx.client("srv", ["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e", sql], timeout=60, ok=True)
    return acct


def redis_auth(ctx: Context, addr: str) -> Account:
    """redis-server with ``requirepass`` (the default user's password)."""
    acct = Account("default", _password(ctx))
    ctx.daemon("srv", ["redis-server", "--bind", addr, "--port", "6379", "--protected-mode", "no",
                       "--requirepass", acct.password, "--save", "", "--appendonly", "no",
                       "--daemonize", "no", "--dir", str(ctx.dir)], "redis", listen=[("tcp", addr, 6379)])
    return acct


# -- windows -------------------------------------------------------------------------------------

def samba(ctx: Context, addr: str, files: int = 6, legacy: bool = False) -> tuple[Account, list[str]]:
    """Samba smbd on ``addr``:445 (no NetBIOS): a guest share and a user share; RPC pipes on demand.

    ``legacy`` also accepts SMB1 (NT1) and NTLMv1, as old Windows servers do (hydra's smb module needs them).
    """
    d = ctx.mkdir("samba")
    for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc", "share", "home"):
        ctx.mkdir(f"samba/{sub}", 0o755)
    names = []
    for i in range(files):
        ctx.blob(f"samba/share/doc{i}.bin", ctx.size(500, 1_500_000))
        names.append(f"doc{i}.bin")
    signing = ctx.choice(["default", "auto", "mandatory"])
    conf = ctx.write("samba/smb.conf", f"""
[global]
  workgroup = LAB
  netbios name = LABSRV
  server string = lab file server
  server role = standalone server
  interfaces = {addr}/24
  bind interfaces only = yes
  smb ports = 445
  disable netbios = yes
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  private dir = {d}/private
  pid directory = {d}/pid
  ncalrpc dir = {d}/ncalrpc
  binddns dir = {d}/private
  log file = {d}/log.%m
  log level = 1
  passdb backend = tdbsam:{d}/private/passdb.tdb
  map to guest = Bad User
  guest account = nobody
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  server min protocol = {"NT1" if legacy else "SMB2_02"}
  ntlm auth = {"yes" if legacy else "ntlmv2-only"}
  server signing = {signing}
  obey pam restrictions = no
  unix password sync = no
[public]
  path = {d}/share
  read only = yes
  guest ok = yes
[home]
  path = {d}/home
  read only = no
  valid users = root
  force user = root
""")
    acct = Account("root", _password(ctx))
    ctx.client("srv", ["pdbedit", "-s", conf, "-a", "-u", acct.user, "-t"], timeout=30, ok=True,
               input=f"{acct.password}\n{acct.password}\n".encode())
    ctx.daemon("srv", ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", conf],
               "smbd", listen=[("tcp", addr, 445)], wait=30)
    ctx.notes.append(f"samba signing {signing}")
    return acct, names


# -- remote access ---------------------------------------------------------------------------------

LOGIN_PY = r'''#!/usr/bin/python3
"""A login program for the lab's telnetd: one account, three tries, then a shell."""
import os, sys, time
USER, PASSWORD = %r, %r
for _ in range(3):
    sys.stdout.write("lab login: "); sys.stdout.flush()
    user = ""
    while not user:  # a terminal's CR LF can leave an empty line
        line = sys.stdin.readline()
        if not line:
            sys.exit(1)
        user = line.strip()
    sys.stdout.write("Password: "); sys.stdout.flush()
    pw = sys.stdin.readline().strip()
    while not pw:
        line = sys.stdin.readline()
        if not line:
            sys.exit(1)
        pw = line.strip()
    if user == USER and pw == PASSWORD:
        sys.stdout.write("Last login: today from lab\r\n"); sys.stdout.flush()
        os.environ.update(PS1="%%s@lab:~$ " %% USER, HOME=%r)
        os.chdir(%r)
        os.execv("/bin/sh", ["sh", "-i"])
    time.sleep(1)
    sys.stdout.write("\r\nLogin incorrect\r\n"); sys.stdout.flush()
sys.exit(1)
'''


def telnetd(ctx: Context, addr: str) -> Account:
    """inetutils telnetd on ``addr``:23, started per connection by inetutils-inetd, with a lab login program."""
    acct = Account(ctx.choice(["operator", "admin", "pi"]), _password(ctx))
    home = ctx.mkdir("telnet/home")
    for i in range(4):
        ctx.blob(f"telnet/home/log{i}.txt", ctx.size(200, 60_000))
    login = ctx.write("telnet/login.py", LOGIN_PY % (acct.user, acct.password, str(home), str(home)), 0o755)
    conf = ctx.write("telnet/inetd.conf",
                     f"{addr}:telnet stream tcp nowait root /usr/sbin/telnetd telnetd -h -E {login}\n")
    ctx.daemon("srv", ["inetutils-inetd", "-d", conf], "inetd", listen=[("tcp", addr, 23)])
    return acct


def xvnc(ctx: Context, addr: str) -> Account:
    """TigerVNC's Xvnc on ``addr``:5900 with VNC password authentication (RFB is not encrypted)."""
    acct = Account("", _password(ctx)[:8])
    pwfile = ctx.path("vnc/passwd")
    # vncpasswd -f writes the obfuscated password (binary) to stdout: a shell redirect keeps the bytes.
    ctx.client("srv", ["sh", "-c", f"printf '%s\\n' \"$0\" | vncpasswd -f > {pwfile}", acct.password],
               timeout=20, ok=True)
    geometry = ctx.choice(["800x600", "1024x768", "1280x800", "1600x900"])
    display = f":{ctx.rng.randint(100, 899)}"
    ctx.daemon("srv", ["Xvnc", display, "-interface", addr, "-rfbport", "5900", "-SecurityTypes", "VncAuth",
                       "-PasswordFile", pwfile, "-geometry", geometry, "-depth", ctx.choice(["16", "24"]),
                       "-nolisten", "tcp", "-AlwaysShared", *(["-retro"] if ctx.rng.random() < 0.5 else [])],
               "Xvnc", listen=[("tcp", addr, 5900)], wait=30)
    ctx.notes.append(f"Xvnc geometry {geometry}")
    return acct


# -- network management -----------------------------------------------------------------------------

def snmpd(ctx: Context, addrs: list[str], v3: Account | None = None) -> str:
    """net-snmp snmpd on UDP 161 of ``addrs``; community and (optionally) an SNMPv3 authPriv user."""
    d = ctx.mkdir("snmp")
    community = ctx.choice(["public", "labmon", "n3tw0rk"])
    lines = [f"rocommunity {community} 10.77.0.0/16", "sysLocation lab rack 7", "sysContact ops@lab.test",
             f"sysName srv.{LAB_DOMAIN}", "sysServices 72", "dontLogTCPWrappersConnects yes",
             "proc sshd", "disk / 10000", "load 12 10 5"]
    if v3:
        lines += [f"createUser {v3.user} SHA \"{v3.password}\" AES \"{v3.password}x\"", f"rouser {v3.user} authpriv"]
    conf = ctx.write("snmp/snmpd.conf", "\n".join(lines) + "\n")
    listen = ",".join(f"udp:{a}:161" for a in addrs)
    ctx.daemon("srv", ["snmpd", "-f", "-Lo", "-C", "-c", conf, "-p", f"{d}/snmpd.pid",
                       f"-Dnone", "--persistentDir=" + str(d), listen],
               "snmpd", listen=[("udp", a, 161) for a in addrs], wait=30,
               env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(d), "SNMPCONFPATH": str(d),
                    "MIBS": ""})
    return community


#: chronyd unpacked (not installed) by scripts/lab-setup.sh: Debian's chrony package conflicts with
#: systemd-timesyncd (one time daemon per system), and the lab must not replace the host's.
CHRONYD = "/opt/multa-lab/chrony/usr/sbin/chronyd"


def chronyd(ctx: Context, addr: str) -> None:
    """chronyd as an NTP server on ``addr``:123 from its local clock; -x: it never touches the system clock."""
    d = ctx.mkdir("chrony")
    conf = ctx.write("chrony/chrony.conf", "\n".join([
        f"bindaddress {addr}", "port 123", "allow 10.77.0.0/16", f"local stratum {ctx.rng.randint(2, 10)}",
        "cmdport 0", f"pidfile {d}/chronyd.pid", f"driftfile {d}/drift", "noclientlog" if ctx.rng.random() < 0.3 else "",
    ]) + "\n")
    ctx.daemon("srv", [CHRONYD, "-d", "-x", "-4", "-u", "root", "-f", conf], "chronyd",
               listen=[("udp", addr, 123)], wait=20)


def rsyslogd(ctx: Context, addr: str) -> None:
    """rsyslog receiving syslog on UDP and TCP 514 of ``addr``, writing to the work folder."""
    d = ctx.mkdir("rsyslog")
    conf = ctx.write("rsyslog/rsyslog.conf", f"""
global(workDirectory="{d}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="{addr}" port="514")
input(type="imtcp" address="{addr}" port="514")
*.* action(type="omfile" file="{d}/messages.log")
""")
    ctx.daemon("srv", ["rsyslogd", "-n", "-f", conf, "-i", f"{d}/rsyslogd.pid"], "rsyslogd",
               listen=[("udp", addr, 514), ("tcp", addr, 514)], wait=30)


# -- web: Apache and lighttpd -----------------------------------------------------------------------

APACHE_MODULES = ("authz_core", "authz_host", "authz_user", "authn_core", "authn_file", "auth_basic", "dir",
                  "mime", "alias", "headers", "setenvif")


def apache(ctx: Context, site: WebSite, addr: str, https: bool = False) -> Daemon:
    """Apache httpd 2.4 on ``addr``:80 (and :443 with mod_ssl), MPM drawn from event/worker/prefork."""
    from multa_broker.lab.services import tls_cert
    d = ctx.mkdir("apache")
    ctx.mkdir("apache/run")
    ctx.client("srv", ["htpasswd", "-cbB", d / "htpasswd", site.user, site.password], timeout=20, ok=True)
    mpm = ctx.choice(["event", "worker", "prefork"])
    mods = [f"LoadModule mpm_{mpm}_module /usr/lib/apache2/modules/mod_mpm_{mpm}.so"]
    mods += [f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in APACHE_MODULES]
    ssl = ""
    if https:
        crt, key = tls_cert(ctx, "apache", f"www2.{LAB_DOMAIN}")
        mods.append("LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so")
        mods.append("LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so")
        ssl = f"""Listen {addr}:443
SSLSessionCache shmcb:{d}/run/ssl_scache(512000)
<VirtualHost {addr}:443>
  SSLEngine on
  SSLCertificateFile {crt}
  SSLCertificateKeyFile {key}
  SSLProtocol -all +TLSv1.2 +TLSv1.3
</VirtualHost>"""
    conf = ctx.write("apache/httpd.conf", "\n".join(mods) + f"""
ServerRoot "{d}"
ServerName www2.{LAB_DOMAIN}
Listen {addr}:80
PidFile {d}/run/httpd.pid
DefaultRuntimeDir {d}/run
Mutex file:{d}/run default
User www-data
Group www-data
ErrorLog {d}/error.log
LogLevel warn
TypesConfig /etc/mime.types
KeepAlive {ctx.choice(["On", "On", "Off"])}
MaxKeepAliveRequests {ctx.choice([100, 500])}
KeepAliveTimeout {ctx.choice([5, 15])}
DocumentRoot "{site.root}"
DirectoryIndex index.html
<Directory />
  Require all granted
  AllowOverride None
</Directory>
<Location "{site.private}">
  AuthType Basic
  AuthName "lab"
  AuthUserFile {d}/htpasswd
  Require valid-user
</Location>
{ssl}
""")
    want = [("tcp", addr, 80)] + ([("tcp", addr, 443)] if https else [])
    ctx.notes.append(f"apache mpm {mpm}")
    return ctx.daemon("srv", ["apache2", "-f", conf, "-DFOREGROUND"], "apache2", listen=want, wait=30)


def lighttpd(ctx: Context, site: WebSite, addr: str) -> Daemon:
    """lighttpd on ``addr``:80 serving the site's objects."""
    d = ctx.mkdir("lighttpd")
    conf = ctx.write("lighttpd/lighttpd.conf", f"""
server.document-root = "{site.root}"
server.bind = "{addr}"
server.port = 80
server.pid-file = "{d}/lighttpd.pid"
server.errorlog = "{d}/error.log"
server.max-keep-alive-requests = {ctx.choice([16, 100, 1000])}
server.max-keep-alive-idle = {ctx.choice([5, 30])}
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html", ".js" => "application/javascript", ".css" => "text/css",
                   ".jpg" => "image/jpeg", ".bin" => "application/octet-stream")
""")
    return ctx.daemon("srv", ["lighttpd", "-D", "-f", conf], "lighttpd", listen=[("tcp", addr, 80)], wait=30)


# -- DNS: Unbound and BIND -----------------------------------------------------------------------------

def unbound_config(ctx: Context, name: str, interface: str, clauses: str) -> Path:
    """An Unbound config in ``name``/ answering on ``interface``:53, recursion off for every name
    but what ``clauses`` (more ``server:`` lines, then any other sections) allows."""
    d = ctx.mkdir(name)
    return ctx.write(f"{name}/unbound.conf", f"""
server:
  interface: {interface}
  port: 53
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  module-config: "iterator"
  num-threads: 1
  local-zone: "." refuse
""" + clauses + "\nremote-control:\n  control-enable: no\n")


def unbound(ctx: Context, records: dict[str, str], txt: dict[str, str]) -> Daemon:
    """Unbound on the lab resolver address serving lab.test from local data; every other name refused."""
    data = [f'  local-data: "{n}. A {ip}"' for n, ip in records.items()]
    data += [f'  local-data: \'{n}. TXT "{t}"\'' for n, t in txt.items()]
    data += [f'  local-data: "{LAB_DOMAIN}. MX 10 mail.{LAB_DOMAIN}."',
             f'  local-data: "_mqtt._tcp.{LAB_DOMAIN}. SRV 0 0 1883 mqtt.{LAB_DOMAIN}."']
    conf = unbound_config(ctx, "unbound", RESOLVER, "\n".join([
        "  access-control: 10.77.0.0/16 allow", f'  local-zone: "{LAB_DOMAIN}." static', *data]))
    return ctx.daemon("srv", ["unbound", "-d", "-p", "-c", conf], "unbound",
                      listen=[("udp", RESOLVER, 53), ("tcp", RESOLVER, 53)], wait=30)


def named(ctx: Context, records: dict[str, str], txt: dict[str, str]) -> Daemon:
    """BIND 9 on the lab resolver address, authoritative for lab.test, recursion off."""
    d = ctx.mkdir("bind")
    zone = [f"$TTL {ctx.choice([60, 300, 3600])}",
            f"@ IN SOA ns.{LAB_DOMAIN}. hostmaster.{LAB_DOMAIN}. ( {ctx.rng.randint(1, 10**6)} 3600 600 86400 60 )",
            f"@ IN NS ns.{LAB_DOMAIN}.", f"ns IN A {RESOLVER}", f"@ IN MX 10 mail.{LAB_DOMAIN}.",
            f"_mqtt._tcp IN SRV 0 0 1883 mqtt.{LAB_DOMAIN}."]
    zone += [f"{n.removesuffix('.' + LAB_DOMAIN)} IN A {ip}" for n, ip in records.items()]
    zone += [f"{n.removesuffix('.' + LAB_DOMAIN)} IN TXT \"{t}\"" for n, t in txt.items()]
    zfile = ctx.write("bind/lab.test.zone", "\n".join(zone) + "\n")
    conf = ctx.write("bind/named.conf", f"""
options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  listen-on port 53 {{ {RESOLVER}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  allow-query {{ any; }};
  dnssec-validation no;
  minimal-responses {ctx.choice(["yes", "no"])};
}};
controls {{ }};
zone "{LAB_DOMAIN}" {{ type primary; file "{zfile}"; }};
""")
    if find_tool("named-checkconf"):
        ctx.client("srv", ["named-checkconf", conf], timeout=20, ok=True)
    return ctx.daemon("srv", ["named", "-g", "-4", "-n", "1", "-c", conf], "named",
                      listen=[("udp", RESOLVER, 53), ("tcp", RESOLVER, 53)], wait=30)


def need_user(name: str) -> str | None:
    """A scenario check: the system account a server drops to must exist."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return f"missing system user {name} (install the package with `multa lab setup`)"
    return None




# -- VoIP: Kamailio SIP registrar/proxy ---------------------------------------------------------------------

KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def kamailio(ctx: Context, addr: str) -> Account:
    """Kamailio on ``addr``:5060 (UDP and TCP): digest-authenticated REGISTER (one lab password for every
    user, checked by auth's pv_www_authenticate), OPTIONS answered, MESSAGE/INVITE relayed to registered users."""
    d = ctx.mkdir("kamailio")
    acct = Account("", _password(ctx))
    realm = f"voip.{LAB_DOMAIN}"
    mods = ["tm", "sl", "rr", "pv", "maxfwd", "usrloc", "registrar", "textops", "siputils", "xlog", "sanity", "auth"]
    conf = ctx.write("kamailio/kamailio.cfg", f"""#!KAMAILIO
debug=1
log_stderror=yes
children={ctx.rng.randint(1, 3)}
tcp_children=1
listen=udp:{addr}:5060
listen=tcp:{addr}:5060
alias="{realm}"
mpath="{KAMAILIO_MODULES}"
""" + "".join(f'loadmodule "{m}.so"\n' for m in mods) + f"""
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("OPTIONS") && uri == myself && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
  if (is_method("REGISTER")) {{
    if (!pv_www_authenticate("{realm}", "{acct.password}", "0")) {{ www_challenge("{realm}", "0"); exit; }}
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  if (has_totag()) {{ if (loose_route()) {{ t_relay(); exit; }} if (is_method("ACK")) {{ t_relay(); }} exit; }}
  if (is_method("INVITE|MESSAGE|SUBSCRIBE|CANCEL|BYE")) {{
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    record_route();
    t_relay();
    exit;
  }}
  sl_send_reply("405", "Method Not Allowed");
}}
""")
    ctx.daemon("srv", ["kamailio", "-DD", "-E", "-f", conf, "-P", f"{d}/kamailio.pid", "-Y", str(d), "-w", str(d)],
               "kamailio", listen=[("udp", addr, 5060), ("tcp", addr, 5060)], wait=30)
    return acct
