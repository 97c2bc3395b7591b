"""Real services several scenarios share: nginx, dnsmasq, sshd, vsftpd, and TLS material.

Each helper writes its own configuration into the scenario's work folder,
binds only to lab addresses and runs in the foreground so its PID is the one
the lab stops. None of them touches the system's own configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from multa_broker.lab.network import RESOLVER
from multa_broker.lab.procs import Daemon
from multa_broker.lab.scenario import Context, ScenarioError, find_tool

#: Names the lab resolver answers (all in the lab network).
LAB_DOMAIN = "lab.test"

FTP_PASV = range(30000, 30100)


@dataclass
class WebSite:
    root: Path
    paths: list[str]
    #: Basic-auth protected location and its one valid account.
    private: str = "/private/"
    user: str = "alice"
    password: str = "sunshine42"
    #: Accepts POST bodies (nginx reads and discards them).
    upload: str = "/upload"


def web_content(ctx: Context, n: int | None = None, lo: int = 300, hi: int = 1_500_000) -> WebSite:
    """Seeded objects of log-uniform sizes, as a page's HTML, scripts, images and downloads."""
    root = ctx.mkdir("www")
    n = n if n is not None else ctx.count(8, 24, minimum=3)
    kinds = ("html", "js", "css", "jpg", "bin")
    paths = []
    for i in range(n):
        ext = ctx.choice(kinds)
        rel = f"www/obj{i}.{ext}"
        ctx.blob(rel, ctx.size(lo, hi))
        paths.append(f"/obj{i}.{ext}")
    ctx.write("www/index.html", "<html><body>" + "".join(f'<a href="{p}">{p}</a>' for p in paths) + "</body></html>\n")
    ctx.mkdir("www/private")
    ctx.write("www/private/index.html", "<html><body>members only</body></html>\n")
    return WebSite(root, ["/index.html", *paths])


def tls_cert(ctx: Context, name: str, cn: str) -> tuple[Path, Path]:
    """A self-signed certificate made now (key type varies with the seed)."""
    key, crt = ctx.path(f"tls/{name}.key"), ctx.path(f"tls/{name}.crt")
    keyopt = ctx.choice([["-newkey", "rsa:2048"], ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]])
    ctx.client("srv", ["openssl", "req", "-x509", "-nodes", *keyopt, "-keyout", key, "-out", crt,
                       "-days", "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}"], timeout=30, ok=True)
    return crt, key


def nginx(ctx: Context, site: WebSite, addr: str, http: bool = True, https: bool = False,
          inner: str | None = None) -> Daemon:
    """nginx on ``addr`` (port 80 and/or 443), keep-alive on, with a basic-auth location."""
    d = ctx.mkdir("nginx")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        ctx.mkdir(f"nginx/tmp/{sub}")
    ctx.write("nginx/htpasswd", f"{site.user}:{{PLAIN}}{site.password}\n")
    servers = []
    common = (f"root {site.root}; keepalive_requests 1000; keepalive_timeout 30s; client_max_body_size 20m;"
              f" location {site.private} {{ auth_basic \"lab\"; auth_basic_user_file {d}/htpasswd; }}"
              f" location = {site.upload} {{ return 204; }}")
    listen = []
    if http:
        listen.append((f"{addr}:80", "", 80))
    if inner:
        listen.append((f"{inner}:80", "", 80))
    for where, _, _ in listen:
        servers.append(f"server {{ listen {where}; {common} }}")
    if https:
        crt, key = tls_cert(ctx, "www", f"www.{LAB_DOMAIN}")
        servers.append(f"server {{ listen {addr}:443 ssl http2; ssl_certificate {crt}; ssl_certificate_key {key};"
                       f" ssl_protocols TLSv1.2 TLSv1.3; {common} }}")
    conf = ctx.write("nginx/nginx.conf", f"""
worker_processes 1;
user root root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  types {{ text/html html; application/javascript js; text/css css; image/jpeg jpg; application/octet-stream bin; }}
  {' '.join(servers)}
}}
""")
    want = [("tcp", addr, 80)] if http else []
    if inner:
        want.append(("tcp", inner, 80))
    if https:
        want.append(("tcp", addr, 443))
    return ctx.daemon("srv", ["nginx", "-p", d, "-c", conf, "-e", d / "error.log", "-g", "daemon off;"],
                      "nginx", listen=want)


def resolver(ctx: Context, records: dict[str, str]) -> Daemon | None:
    """The lab's DNS server (dnsmasq on 10.77.0.53) answering ``records`` (name -> lab address).

    It has no upstream: any other name is refused, so no query ever leaves
    the lab. Returns None when dnsmasq is not installed (scenarios then use
    addresses, and no DNS side traffic appears).
    """
    if find_tool("dnsmasq") is None:
        ctx.notes.append("dnsmasq not installed: clients used addresses, no DNS side traffic")
        return None
    lines = [f"host-record={name},{ctx.target(ip)}" for name, ip in records.items()]
    return dnsmasq(ctx, lines)


def dnsmasq(ctx: Context, extra_lines: list[str], name: str = "dnsmasq") -> Daemon:
    conf = ctx.write(f"{name}.conf", "\n".join([
        f"listen-address={RESOLVER}", "bind-interfaces", "except-interface=lo",
        "no-resolv", "no-hosts", "no-poll", "log-facility=-",
        f"local=/{LAB_DOMAIN}/", f"domain={LAB_DOMAIN}", "user=root", f"pid-file={ctx.dir}/{name}.pid",
        *extra_lines]) + "\n")
    return ctx.daemon("srv", ["dnsmasq", "-k", f"--conf-file={conf}"], name,
                      listen=[("udp", RESOLVER, 53), ("tcp", RESOLVER, 53)])


@dataclass
class SshSetup:
    client_key: Path
    daemon: Daemon


def sshd(ctx: Context, addr: str, password_auth: bool = False) -> SshSetup:
    """OpenSSH server on ``addr``:22 with keys made now; root logs in with the client key only."""
    if find_tool("ssh-keygen") is None:
        raise ScenarioError("ssh-keygen missing")
    d = ctx.mkdir("ssh", 0o700)
    for f in ("hostkey", "clientkey"):
        ctx.client("srv", ["ssh-keygen", "-q", "-t", ctx.choice(["ed25519", "ecdsa", "rsa"]), "-N", "", "-f", d / f],
                   timeout=30, ok=True)
    (d / "authorized_keys").write_text((d / "clientkey.pub").read_text())
    # The privilege-separation directory sshd insists on (the package's service creates it at start).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    conf = ctx.write("ssh/sshd_config", f"""
ListenAddress {addr}
Port 22
HostKey {d}/hostkey
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication {'yes' if password_auth else 'no'}
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
UseDNS no
MaxStartups 50:30:100
MaxAuthTries 6
LoginGraceTime 20
Subsystem sftp internal-sftp
""")
    daemon = ctx.daemon("srv", [find_tool("sshd"), "-D", "-e", "-f", conf], "sshd", listen=[("tcp", addr, 22)])
    return SshSetup(d / "clientkey", daemon)


def ssh_opts(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


def vsftpd(ctx: Context, addr: str, files: int = 6) -> tuple[Daemon, list[str]]:
    """vsftpd on ``addr``:21: anonymous downloads (passive and active), local logins refused."""
    ctx.mkdir("ftp")
    ctx.mkdir("ftp/pub")
    names = []
    for i in range(files):
        ctx.blob(f"ftp/pub/file{i}.dat", ctx.size(500, 1_500_000))
        names.append(f"pub/file{i}.dat")
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    conf = ctx.write("vsftpd.conf", f"""
listen=YES
listen_ipv6=NO
listen_address={addr}
background=NO
anonymous_enable=YES
anon_root={ctx.path('ftp')}
no_anon_password=YES
local_enable=YES
write_enable=NO
pasv_enable=YES
pasv_min_port={FTP_PASV.start}
pasv_max_port={FTP_PASV.stop - 1}
port_enable=YES
connect_from_port_20=YES
secure_chroot_dir=/var/run/vsftpd/empty
pam_service_name=vsftpd
seccomp_sandbox=NO
xferlog_enable=NO
vsftpd_log_file={ctx.dir}/vsftpd-xfer.log
max_clients=50
max_per_ip=50
""", mode=0o600)
    d = ctx.daemon("srv", ["vsftpd", conf], "vsftpd", listen=[("tcp", addr, 21)])
    return d, names
