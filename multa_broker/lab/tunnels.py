"""Tunnel scenarios: real VPN and DNS-tunnel software carrying real inner traffic.

The capture sees only the outer connection (inner packets travel on tun
devices inside the namespaces), which is what gets labelled. Inner networks
are 10.77.100-103.0/24, inside the lab range like everything else.
"""

from __future__ import annotations

from pathlib import Path

from multa_broker.lab.benign import curl_session
from multa_broker.lab.labels import Labels, ports
from multa_broker.lab.scenario import Context, ScenarioError, scenario
from multa_broker.lab.services import nginx, web_content

VPN = Labels("vpn", "encrypted", "vpn", "benign")
#: iodine encodes but does not encrypt: the DNS messages and what they carry are readable.
DNS_TUNNEL = Labels("dns", "cleartext", "dns-tunnel", "benign")

OVPN_NET = ("10.77.100.1", "10.77.100.2")
WG_NET = ("10.77.101.1", "10.77.101.2")
IODINE_NET = "10.77.102.1"
IPSEC_NET = ("10.77.103.1", "10.77.103.2")
CHARON = "/usr/lib/ipsec/charon"


def _inner_traffic(ctx: Context, inner_srv: str, sessions: tuple[int, int], hi: int) -> None:
    """Browse a site served on the server's inner address, through the tunnel."""
    site = web_content(ctx, n=ctx.count(4, 10, minimum=2), hi=hi)
    nginx(ctx, site, ctx.srv.ip, http=False, inner=inner_srv)
    for _ in range(ctx.count(*sessions, minimum=2)):
        paths = ctx.rng.sample(site.paths, k=min(len(site.paths), ctx.rng.randint(1, 4)))
        ctx.client("cli", curl_session(ctx, f"http://{ctx.target(inner_srv)}", paths), timeout=120, ok=True)
        ctx.pause(0.2, 2.0)


def _has_ip(ctx: Context, role: str, ip: str) -> bool:
    out = ctx.procs.run(ctx.net.hosts[role].ns, ["ip", "-4", "-o", "addr", "show"], timeout=10).output
    return f"inet {ip}/" in out or f"inet {ip} " in out


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
    cipher = ctx.choice(["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"])
    common = ["--dev", "tun", "--disable-dco", "--verb", "3", "--ca", pki["ca.crt"], "--dh", "none",
              "--data-ciphers", cipher, "--ping", str(ctx.rng.randint(2, 10)), "--ping-exit", "120",
              "--tls-version-min", ctx.choice(["1.2", "1.3"])]
    wrap = ctx.choice(["none", "tls-auth", "tls-crypt"])
    if wrap != "none":
        key = ctx.path("pki/ta.key")
        ctx.client("srv", ["openvpn", "--genkey", "secret" if wrap == "tls-auth" else "tls-crypt", key],
                   timeout=30, ok=True)
        common += [f"--{wrap}", key] + (["0"] if wrap == "tls-auth" else [])
    if ctx.rng.random() < 0.3:
        common += ["--compress", "lz4-v2", "--allow-compression", "yes"]
    srv_proto = "udp" if proto == "udp" else "tcp-server"
    cli_proto = "udp" if proto == "udp" else "tcp-client"
    ctx.daemon("srv", ["openvpn", *common, "--tls-server", "--cert", pki["server.crt"], "--key", pki["server.key"],
                       "--local", addr, "--lport", str(port), "--proto", srv_proto,
                       "--ifconfig", OVPN_NET[0], OVPN_NET[1]], "openvpn-server", listen=[(proto, addr, port)])
    if "tls-auth" in common:
        common[common.index("0")] = "1"
    client = ctx.daemon("cli", ["openvpn", *common, "--tls-client", "--cert", pki["client.crt"],
                                "--key", pki["client.key"], "--remote-cert-tls", "server", "--nobind",
                                "--remote", ctx.target(addr), str(port), "--proto", cli_proto,
                                "--ifconfig", OVPN_NET[1], OVPN_NET[0]], "openvpn-client")
    ctx.wait_until("openvpn tunnel", lambda: "Initialization Sequence Completed" in client.log_path.read_text(
        errors="replace"), timeout=30)
    _inner_traffic(ctx, OVPN_NET[0], (3, 8), hi=1_500_000)


@scenario("openvpn-udp", "tunnel", "OpenVPN over UDP, TLS with a PKI made at run time, HTTP inside",
          needs=("openvpn", "openssl", "nginx", "curl"))
def openvpn_udp(ctx: Context) -> None:
    _openvpn(ctx, "udp")


@scenario("openvpn-tcp", "tunnel", "OpenVPN over TCP, TLS with a PKI made at run time, HTTP inside",
          needs=("openvpn", "openssl", "nginx", "curl"))
def openvpn_tcp(ctx: Context) -> None:
    _openvpn(ctx, "tcp")


@scenario("wireguard", "tunnel", "wireguard-go (userspace WireGuard) between client and server, HTTP inside",
          needs=("wireguard-go", "wg", "nginx", "curl"))
def wireguard(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    port = ctx.choice([51820, 51820, 51821, 4500])
    ctx.rule(VPN, server=addr, ports=ports(port), protos=("udp",), what="wireguard-go")
    rid = ctx.net.prefix.split("-")[1]
    ifs = {"srv": f"wgs{rid}", "cli": f"wgc{rid}"}
    keys = {}
    for role in ("srv", "cli"):
        priv = ctx.client(role, ["wg", "genkey"], timeout=10, ok=True).output.strip()
        pub = ctx.client(role, ["wg", "pubkey"], timeout=10, ok=True, input=(priv + "\n").encode()).output.strip()
        ctx.write(f"wg/{role}.key", priv + "\n", mode=0o600)
        keys[role] = pub
    # wireguard-go keeps its control socket in /var/run/wireguard, shared by all namespaces:
    # interface names carry the run id so two lab runs cannot collide, and stale sockets go.
    for name in ifs.values():
        ctx.cleanups.append(lambda n=name: Path(f"/var/run/wireguard/{n}.sock").unlink(missing_ok=True))
    for role, inner, peer_role, peer_inner in (("srv", WG_NET[0], "cli", WG_NET[1]), ("cli", WG_NET[1], "srv", WG_NET[0])):
        ctx.daemon(role, ["wireguard-go", "-f", ifs[role]], f"wireguard-go-{role}",
                   env={**ctx.procs.env, "LOG_LEVEL": "error"})
        ctx.wait_until(f"wireguard-go socket {ifs[role]}",
                       lambda n=ifs[role]: Path(f"/var/run/wireguard/{n}.sock").exists(), timeout=10)
        argv = ["wg", "set", ifs[role], "private-key", str(ctx.path(f"wg/{role}.key")),
                "peer", keys[peer_role], "allowed-ips", f"{peer_inner}/32"]
        if role == "srv":
            argv[3:3] = ["listen-port", str(port)]
        else:
            argv += ["endpoint", f"{ctx.target(addr)}:{port}"]
            if ctx.rng.random() < 0.5:
                argv += ["persistent-keepalive", str(ctx.rng.randint(2, 25))]
        ctx.client(role, argv, timeout=10, ok=True)
        ctx.client(role, ["ip", "addr", "add", f"{inner}/24", "dev", ifs[role]], timeout=10, ok=True)
        ctx.client(role, ["ip", "link", "set", ifs[role], "mtu", str(ctx.choice([1420, 1420, 1380, 1280])), "up"],
                   timeout=10, ok=True)
    _inner_traffic(ctx, WG_NET[0], (3, 8), hi=1_500_000)


@scenario("iodine", "tunnel", "iodine IP-over-DNS tunnel (iodined authoritative for t.lab.test), HTTP inside",
          needs=("iodined", "iodine", "nginx", "curl"))
def iodine(ctx: Context) -> None:
    addr = ctx.srv.extra[1]
    ctx.rule(DNS_TUNNEL, server=addr, ports=ports(53), protos=("udp",), what="iodine")
    password = f"lab{ctx.rng.randrange(10**8)}"
    domain = "t.lab.test"
    ctx.daemon("srv", ["iodined", "-f", "-c", "-P", password, "-l", addr, "-p", "53", "-d", "dns0",
                       f"{IODINE_NET}/27", domain], "iodined", listen=[("udp", addr, 53)])
    qtype = ctx.choice(["NULL", "NULL", "TXT", "CNAME", "MX", "SRV", "PRIVATE"])
    argv = ["iodine", "-f", "-r", "-P", password, "-d", "dns0", "-T", qtype, "-I", str(ctx.rng.randint(1, 4))]
    if qtype not in ("NULL", "PRIVATE"):
        argv += ["-O", ctx.choice(["Base32", "Base64", "Base128"])]
    client = ctx.daemon("cli", [*argv, ctx.target(addr), domain], "iodine-client")
    ctx.wait_until("iodine tunnel", lambda: "Connection setup complete" in client.log_path.read_text(errors="replace"),
                   timeout=40)
    # iodine is slow (a few KB/s per query budget): small objects only.
    _inner_traffic(ctx, IODINE_NET, (2, 5), hi=60_000)


def _ipsec_missing() -> str | None:
    if not Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so").exists():
        return "missing strongSwan's kernel-libipsec plugin (libcharon-extra-plugins); the kernel has no ESP"
    return None


@scenario("ipsec", "tunnel", "strongSwan IKEv2 (PSK) with userspace ESP-in-UDP (kernel-libipsec), HTTP inside",
          needs=(CHARON, "swanctl", "nginx", "curl"), check=_ipsec_missing)
def ipsec(ctx: Context) -> None:
    addr = ctx.srv.extra[0]
    # IKE on 500, then NAT-T style UDP 4500 carrying ESP (encap=yes): both are the VPN's outer flows.
    ctx.rule(VPN, server=addr, ports=ports(500, 4500), protos=("udp",), what="strongswan")
    psk = f"lab-{ctx.rng.randrange(10**12)}"
    ike = ctx.choice(["aes128-sha256-modp2048", "aes256-sha256-modp3072", "aes256-sha384-modp2048"])
    esp = ctx.choice(["aes128-sha256", "aes256-sha256", "aes128-sha1"])
    ends = {"srv": (addr, ctx.cli.ip, IPSEC_NET[0], IPSEC_NET[1]), "cli": (ctx.cli.ip, addr, IPSEC_NET[1], IPSEC_NET[0])}
    for role, (local, remote, inner, peer_inner) in ends.items():
        d = ctx.mkdir(f"ipsec-{role}", 0o700)
        ctx.client(role, ["ip", "addr", "add", f"{inner}/32", "dev", "lo"], timeout=10, ok=True)
        (d / "strongswan.conf").write_text(f"""
charon {{
  load = random nonce aes sha1 sha2 hmac kdf gmp pem pkcs1 x509 kernel-libipsec kernel-netlink socket-default vici
  port = 500
  port_nat_t = 4500
  install_routes = yes
  filelog {{ stderr {{ default = 1 }} }}
  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}
}}
""")
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
      id = {'cli' if role == 'srv' else 'srv'}.lab.test }}
    children {{ lab {{ local_ts = {inner}/32
      remote_ts = {peer_inner}/32
      esp_proposals = {esp} }} }}
  }}
}}
secrets {{ ike-lab {{ id-1 = srv.lab.test
  id-2 = cli.lab.test
  secret = "{psk}" }} }}
""")
        # charon keeps its pid file in /run: give each charon a private /run so two can run at once.
        ctx.daemon(role, ["sh", "-c", f"mount -t tmpfs lab-run /run && exec {CHARON}"], f"charon-{role}",
                   env={**ctx.procs.env, "STRONGSWAN_CONF": str(d / "strongswan.conf")})
        ctx.wait_until(f"charon {role}", lambda p=d / "charon.vici": p.exists(), timeout=15)
        ctx.client(role, ["swanctl", "--load-all", "--file", str(d / "swanctl.conf"), "--uri", f"unix://{d}/charon.vici"],
                   timeout=20, ok=True)
    r = ctx.client("cli", ["swanctl", "--initiate", "--child", "lab", "--timeout", "20",
                           "--uri", f"unix://{ctx.dir}/ipsec-cli/charon.vici"], timeout=30)
    if r.returncode != 0:
        raise ScenarioError("IKE negotiation failed: " + " | ".join(r.output.strip().splitlines()[-3:]))
    _inner_traffic(ctx, IPSEC_NET[0], (3, 8), hi=1_000_000)
