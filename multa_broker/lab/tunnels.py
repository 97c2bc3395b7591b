"""Tunnel scenarios: real VPN and DNS-tunnel software carrying real inner traffic.

The capture sees only the outer connection (inner packets travel on tun
devices inside the namespaces), which is what gets labelled. Inner networks
are 10.77.100-103.0/24, inside the lab range like everything else.
"""

from __future__ import annotations

from pathlib import Path

from multa_broker.lab.benign import curl_allowance, curl_session
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.scenario import Context, ScenarioError, scenario
from multa_broker.lab.servers import unbound_config
from multa_broker.lab.services import WebSite, nginx, web_content

VPN = Labels("vpn", "encrypted", "vpn", "benign")
#: iodine encodes but does not encrypt: the DNS messages and what they carry are readable.
DNS_TUNNEL = Labels("dns", "cleartext", "dns-tunnel", "benign")

OVPN_NET = ("10.77.100.1", "10.77.100.2")
WG_NET = ("10.77.101.1", "10.77.101.2")
IODINE_NET = "10.77.102.1"
IPSEC_NET = ("10.77.103.1", "10.77.103.2")
CHARON = "/usr/lib/ipsec/charon"


def _inner_site(ctx: Context, hi: int) -> WebSite:
    """A site on every server address (the tunnel's inner one comes and goes with each session)."""
    site = web_content(ctx, n=ctx.count(4, 10, minimum=2), hi=hi)
    nginx(ctx, site, "0.0.0.0", http=True)
    return site


def _browse(ctx: Context, site: WebSite, inner_srv: str, sessions: tuple[int, int]) -> None:
    """Fetch objects from the server's inner address, through the tunnel."""
    for _ in range(ctx.count(*sessions, minimum=1)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 4)))
        # A slow tunnel (iodine over a long path: 228-byte fragments at 132 ms) needs all of it.
        ctx.client("cli", curl_session(ctx, f"http://{ctx.target(inner_srv)}", paths),
                   timeout=curl_allowance(paths), ok=True)
        ctx.pause(0.2, 2.0)


def _sessions(ctx: Context) -> range:
    """Tunnel sessions per scenario: each is a new outer connection, so a new labelled flow."""
    return range(ctx.count(4, 8, minimum=2))


def _pki(ctx: Context) -> dict[str, Path]:
    """A CA, a server and a client certificate, made now with openssl (EC P-256)."""
    d = ctx.mkdir("pki", 0o700)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda argv: ctx.client("srv", ["openssl", *argv], timeout=30, ok=True)  # noqa: E731
    run(["req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2", "-subj", "/CN=lab-ca"])
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (d / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\nkeyUsage=digitalSignature,keyAgreement\n")
        run(["req", *ec, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr", "-subj", f"/CN={name}.lab.test"])
        run(["x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-out", d / f"{name}.crt", "-days", "2", "-extfile", d / f"{name}.ext"])
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def _openvpn(ctx: Context, proto: str) -> None:
    addr = ctx.srv.extra[0]
    port = ctx.choice([1194, 1194, 443, 8443]) if proto == "tcp" else ctx.choice([1194, 1194, 1195])
    ctx.rule(VPN, server=addr, ports=ports(port), protos=(proto,), what=f"openvpn {proto}")
    pki = _pki(ctx)
    site = _inner_site(ctx, hi=1_000_000)
    for n in _sessions(ctx):
        cipher = ctx.choice(["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"])
        common = ["--dev", "tun", "--disable-dco", "--verb", "3", "--ca", pki["ca.crt"], "--dh", "none",
                  "--data-ciphers", cipher, "--ping", str(ctx.rng.randint(2, 10)), "--ping-exit", "120",
                  "--tls-version-min", ctx.choice(["1.2", "1.3"])]
        if ctx.rng.random() < 0.3:
            common += ["--compress", "lz4-v2", "--allow-compression", "yes"]
        if ctx.rng.random() < 0.3:
            common += ["--tun-mtu", str(ctx.choice([1400, 1440, 1500])), "--mssfix", "0" if proto == "tcp" else "1360"]
        wrap = ctx.choice(["none", "tls-auth", "tls-crypt"])
        srv_wrap: list = []
        cli_wrap: list = []
        if wrap != "none":
            key = ctx.path(f"pki/ta{n}.key")
            ctx.client("srv", ["openvpn", "--genkey", "secret" if wrap == "tls-auth" else "tls-crypt", key],
                       timeout=30, ok=True)
            srv_wrap = [f"--{wrap}", key] + (["0"] if wrap == "tls-auth" else [])
            cli_wrap = [f"--{wrap}", key] + (["1"] if wrap == "tls-auth" else [])
        server = ctx.daemon("srv", ["openvpn", *common, *srv_wrap, "--tls-server", "--cert", pki["server.crt"],
                                    "--key", pki["server.key"], "--local", addr, "--lport", str(port),
                                    "--proto", "udp" if proto == "udp" else "tcp-server",
                                    "--ifconfig", OVPN_NET[0], OVPN_NET[1]], f"openvpn-server{n}",
                            listen=[(proto, addr, port)])
        client = ctx.daemon("cli", ["openvpn", *common, *cli_wrap, "--tls-client", "--cert", pki["client.crt"],
                                    "--key", pki["client.key"], "--remote-cert-tls", "server", "--nobind",
                                    "--remote", ctx.target(addr), str(port),
                                    "--proto", "udp" if proto == "udp" else "tcp-client",
                                    "--ifconfig", OVPN_NET[1], OVPN_NET[0]], f"openvpn-client{n}")
        ctx.wait_until("openvpn tunnel", lambda: "Initialization Sequence Completed" in client.log_text(),
                       timeout=30)
        _browse(ctx, site, OVPN_NET[0], (1, 3))
        ctx.procs.stop(client)
        ctx.procs.stop(server)
        ctx.pause(0.5, 2.0)


@scenario("openvpn-udp", "tunnel", "OpenVPN over UDP, TLS with a PKI made at run time, HTTP inside",
          needs=("openvpn", "openssl", "nginx", "curl"))
def openvpn_udp(ctx: Context) -> None:
    _openvpn(ctx, "udp")


@scenario("openvpn-tcp", "tunnel", "OpenVPN over TCP, TLS with a PKI made at run time, HTTP inside",
          needs=("openvpn", "openssl", "nginx", "curl"))
def openvpn_tcp(ctx: Context) -> None:
    _openvpn(ctx, "tcp")


def _wg_socket(name: str) -> Path:
    return Path(f"/var/run/wireguard/{name}.sock")


@scenario("wireguard", "tunnel", "wireguard-go (userspace WireGuard) between client and server, HTTP inside",
          needs=("wireguard-go", "wg", "nginx", "curl"))
def wireguard(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    port = ctx.choice([51820, 51820, 51821, 4500])
    ctx.rule(VPN, server=addr, ports=ports(port), protos=("udp",), what="wireguard-go")
    site = _inner_site(ctx, hi=1_000_000)
    rid = ctx.net.prefix.split("-")[1]
    # wireguard-go keeps its control socket in /var/run/wireguard, shared by all namespaces:
    # interface names carry the run id so two lab runs cannot collide, and stale sockets go.
    ifs = {"srv": f"wgs{rid}", "cli": f"wgc{rid}"}
    for name in ifs.values():
        ctx.cleanups.append(lambda n=name: _wg_socket(n).unlink(missing_ok=True))
    keys = {}
    for role in ("srv", "cli"):
        priv = ctx.client(role, ["wg", "genkey"], timeout=10, ok=True).output.strip()
        pub = ctx.client(role, ["wg", "pubkey"], timeout=10, ok=True, input=(priv + "\n").encode()).output.strip()
        ctx.write(f"wg/{role}.key", priv + "\n", mode=0o600)
        keys[role] = pub
    for n in _sessions(ctx):
        mtu = str(ctx.choice([1420, 1420, 1380, 1280]))
        daemons = []
        for role, inner, peer_role, peer_inner in (("srv", WG_NET[0], "cli", WG_NET[1]),
                                                   ("cli", WG_NET[1], "srv", WG_NET[0])):
            daemons.append(ctx.daemon(role, ["wireguard-go", "-f", ifs[role]], f"wireguard-go-{role}{n}",
                                      env={**ctx.procs.env, "LOG_LEVEL": "error"}))
            ctx.wait_until(f"wireguard-go socket {ifs[role]}", lambda r=role: _wg_socket(ifs[r]).exists(), timeout=10)
            argv = ["wg", "set", ifs[role], "private-key", str(ctx.path(f"wg/{role}.key"))]
            if role == "srv":
                argv += ["listen-port", str(port)]
            argv += ["peer", keys[peer_role], "allowed-ips", f"{peer_inner}/32"]
            if role == "cli":
                # No listen-port: each session's client picks a new one, so each is a new outer flow.
                argv += ["endpoint", f"{ctx.target(addr)}:{port}"]
                if ctx.rng.random() < 0.5:
                    argv += ["persistent-keepalive", str(ctx.rng.randint(2, 25))]
            ctx.client(role, argv, timeout=10, ok=True)
            ctx.client(role, ["ip", "addr", "add", f"{inner}/24", "dev", ifs[role]], timeout=10, ok=True)
            ctx.client(role, ["ip", "link", "set", ifs[role], "mtu", mtu, "up"], timeout=10, ok=True)
        _browse(ctx, site, WG_NET[0], (1, 3))
        for d in reversed(daemons):
            ctx.procs.stop(d)
        for i in ifs.values():
            _wg_socket(i).unlink(missing_ok=True)  # gone already unless it was killed hard
        ctx.pause(0.5, 2.0)


@scenario("iodine", "tunnel", "iodine IP-over-DNS tunnel (iodined authoritative for t.lab.test), direct or through "
          "a recursive Unbound on the client host, HTTP inside", needs=("iodined", "iodine", "nginx", "curl", "unbound"))
def iodine(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    ctx.rule(DNS_TUNNEL, server=addr, ports=ports(53), protos=("udp",), what="iodine")
    # iodine is slow (a few KB/s): small objects only.
    site = _inner_site(ctx, hi=40_000)
    domain = "t.lab.test"
    for n in _sessions(ctx):
        password = f"lab{ctx.rng.randrange(10**8)}"
        server = ctx.daemon("srv", ["iodined", "-f", "-c", "-P", password, "-l", addr, "-p", "53", "-d", "dns0",
                                    f"{IODINE_NET}/27", domain], f"iodined{n}", listen=[("udp", addr, 53)])
        qtype = ctx.choice(["NULL", "NULL", "TXT", "CNAME", "MX", "SRV", "PRIVATE"])
        argv = ["iodine", "-f", "-r", "-P", password, "-d", "dns0", "-T", qtype, "-I", str(ctx.rng.randint(1, 4))]
        if qtype not in ("NULL", "PRIVATE"):
            argv += ["-O", ctx.choice(["Base32", "Base64", "Base128"])]
        # How tunnels usually leave a network: through the site's resolver, which asks the tunnel's
        # authoritative server from a new source port per query. The sensor between the two then
        # sees one short flow per query, not one long flow per session.
        resolver = _stub_resolver(ctx, n, domain, addr) if ctx.rng.random() < 0.5 else None
        client = ctx.daemon("cli", [*argv, "127.0.0.1" if resolver else ctx.target(addr), domain],
                            f"iodine-client{n}")
        ctx.wait_until("iodine tunnel", lambda: "Connection setup complete" in client.log_text(),
                       timeout=60)
        _browse(ctx, site, IODINE_NET, (1, 2))
        ctx.procs.stop(client)
        if resolver:
            ctx.procs.stop(resolver)
        ctx.procs.stop(server)
        ctx.pause(0.5, 2.0)


def _stub_resolver(ctx: Context, n: int, domain: str, server: str) -> object:
    """Unbound on the client host's loopback, recursing for ``domain`` to ``server`` (its stub zone)."""
    conf = unbound_config(ctx, f"unbound-stub{n}", "127.0.0.1", "\n".join([
        "  qname-minimisation: no", f'  local-zone: "{domain}." transparent',
        "stub-zone:", f'  name: "{domain}."', f"  stub-addr: {ctx.target(server)}"]))
    return ctx.daemon("cli", ["unbound", "-d", "-p", "-c", conf], f"unbound-stub{n}",
                      listen=[("udp", "127.0.0.1", 53)], wait=30)


def _ipsec_missing() -> str | None:
    if not Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so").exists():
        return "missing strongSwan's kernel-libipsec plugin (libcharon-extra-plugins); the kernel has no ESP"
    return None


def _charon(ctx: Context, role: str, n: int, local: str, remote: str, inner: str, peer_inner: str,
            ports_: tuple[int, int], ike: str, esp: str, psk: str) -> tuple[object, Path]:
    d = ctx.mkdir(f"ipsec-{role}{n}", 0o700)
    (d / "strongswan.conf").write_text(f"""
charon {{
  load = random nonce aes sha1 sha2 hmac kdf gmp pem pkcs1 x509 kernel-libipsec kernel-netlink socket-default vici
  port = {ports_[0]}
  port_nat_t = {ports_[1]}
  install_routes = yes
  filelog {{ stderr {{ default = 1 }} }}
  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}
}}
""")
    peer = "cli" if role == "srv" else "srv"
    (d / "swanctl.conf").write_text(f"""
connections {{
  lab {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    encap = yes
    proposals = {ike}
    local {{ auth = psk
      id = {role}.lab.test }}
    remote {{ auth = psk
      id = {peer}.lab.test }}
    children {{ lab {{ local_ts = {inner}/32
      remote_ts = {peer_inner}/32
      esp_proposals = {esp} }} }}
  }}
}}
secrets {{ ike-lab {{ id-1 = srv.lab.test
  id-2 = cli.lab.test
  secret = "{psk}" }} }}
""")
    # charon keeps its pid file in /run: each charon gets a private /run so two can run at once.
    daemon = ctx.daemon(role, ["sh", "-c", f"mount -t tmpfs lab-run /run && exec {CHARON}"], f"charon-{role}{n}",
                        env={**ctx.procs.env, "STRONGSWAN_CONF": str(d / "strongswan.conf")})
    ctx.wait_until(f"charon {role}", lambda: (d / "charon.vici").exists(), timeout=15)
    ctx.client(role, ["swanctl", "--load-all", "--file", str(d / "swanctl.conf"), "--uri", f"unix://{d}/charon.vici"],
               timeout=20, ok=True)
    return daemon, d


@scenario("ipsec", "tunnel", "strongSwan IKEv2 (PSK) with userspace ESP-in-UDP (kernel-libipsec), HTTP inside",
          needs=(CHARON, "swanctl", "nginx", "curl"), check=_ipsec_missing)
def ipsec(ctx: Context) -> None:
    addr = ctx.srv.extra[0]
    # IKE on 500, then UDP 4500 carrying IKE and ESP (encap=yes): both are the VPN's outer flows.
    ctx.rule(VPN, server=addr, ports=ports(500, 4500), protos=("udp",), what="strongswan")
    site = _inner_site(ctx, hi=1_000_000)
    for role, inner in (("srv", IPSEC_NET[0]), ("cli", IPSEC_NET[1])):
        # The lab network outlives the scenario (other seeds, other scenarios): undo this afterwards.
        ctx.client(role, ["ip", "addr", "replace", f"{inner}/32", "dev", "lo"], timeout=10, ok=True)
        ctx.cleanups.append(lambda r=role, a=inner: ctx.procs.run(
            ctx.net.hosts[r].ns, ["ip", "addr", "del", f"{a}/32", "dev", "lo"], timeout=10))
    for n in _sessions(ctx):
        psk = f"lab-{ctx.rng.randrange(10**12)}"
        ike = ctx.choice(["aes128-sha256-modp2048", "aes256-sha256-modp3072", "aes256-sha384-modp2048"])
        esp = ctx.choice(["aes128-sha256", "aes256-sha256", "aes128-sha1"])
        # The client's ports change per session (as a roaming client's would), so each session is new flows.
        cli_ports = (ctx.rng.randint(20000, 40000), ctx.rng.randint(40001, 60000))
        srv_d, _ = _charon(ctx, "srv", n, addr, ctx.cli.ip, IPSEC_NET[0], IPSEC_NET[1], (500, 4500), ike, esp, psk)
        cli_d, cdir = _charon(ctx, "cli", n, ctx.cli.ip, addr, IPSEC_NET[1], IPSEC_NET[0], cli_ports, ike, esp, psk)
        r = ctx.client("cli", ["swanctl", "--initiate", "--child", "lab", "--timeout", "20",
                               "--uri", f"unix://{cdir}/charon.vici"], timeout=30)
        if r.returncode != 0:
            raise ScenarioError("IKE negotiation failed: " + " | ".join(r.output.strip().splitlines()[-3:]))
        _browse(ctx, site, IPSEC_NET[0], (1, 3))
        # Close the SA the way a client disconnects: otherwise the server's next message
        # hits the stopped client's closed port and draws an ICMP error no rule can label.
        ctx.client("cli", ["swanctl", "--terminate", "--ike", "lab", "--timeout", "10",
                           "--uri", f"unix://{cdir}/charon.vici"], timeout=20)
        ctx.procs.stop(cli_d)
        ctx.procs.stop(srv_d)
        ctx.pause(0.5, 2.0)
