"""A bounded packet flood whose every packet comes from another spoofed lab address.

hping3 spoofs one source per run (``-a``) or any IPv4 address (``--rand-source``);
the lab allows only its own unused addresses, so this small sender draws the
source of each packet from lab prefixes nobody uses. It is what real DDoS
captures look like from the victim: thousands of one-packet flows, each from a
source seen once, towards one endpoint.

    python -m multa_broker.lab.rawflood --dst 10.77.0.12 --port 80 --proto tcp --count 2000 --rate 1000 \\
        --prefix 10.77.100 --prefix 10.77.101 --seed 3

Bounded by ``--count`` (at most :data:`MAX_COUNT`) and the rate; it refuses any
destination or prefix outside the lab's network. Needs CAP_NET_RAW (the lab
runs as root in its own namespaces).
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import struct
import sys
import time

from multa_broker.errors import MultaError
from multa_broker.lab.network import LAB_NET, LAN, assert_lab_address

MAX_SIZE = 1400
MAX_COUNT = 20_000


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int, ttl: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)


def tcp_syn(src: str, dst: str, sport: int, dport: int, seq: int, window: int, mss: int | None) -> bytes:
    options = struct.pack("!BBH", 2, 4, mss) if mss else b""
    offset = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, offset << 4, 0x02, window, 0, 0) + options
    csum = checksum(_pseudo(src, dst, socket.IPPROTO_TCP, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def udp(src: str, dst: str, sport: int, dport: int, body: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    csum = checksum(_pseudo(src, dst, socket.IPPROTO_UDP, len(seg)) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def lab_prefix(text: str) -> str:
    """``10.77.100`` -> itself, when 10.77.100.0/24 is inside the lab's network."""
    try:
        net = ipaddress.ip_network(f"{text}.0/24")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not the first three octets of an IPv4 /24") from None
    if not net.subnet_of(LAB_NET):
        raise argparse.ArgumentTypeError(f"{text}.0/24 is outside the lab network {LAB_NET}")
    if net == LAN:  # where the lab's hosts and their extra addresses live
        raise argparse.ArgumentTypeError(f"{text}.0/24 is the lab's LAN, where its hosts live")
    return text


def lab_address(text: str) -> str:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None
    try:
        return assert_lab_address(text)
    except MultaError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def packets(args: argparse.Namespace, rng: random.Random):
    """(source, IPv4 packet) for each packet of the flood."""
    window = rng.choice([512, 1024, 5840, 14600, 29200, 64240, 65535])
    mss = rng.choice([None, 536, 1380, 1460])
    size = args.size if args.size is not None else rng.choice([0, 8, 32, 100, 512, 1200])
    for _ in range(args.count):
        src = f"{rng.choice(args.prefix)}.{rng.randint(1, 254)}"
        sport = rng.randint(1024, 65535)
        if args.proto == "tcp":
            seg = tcp_syn(src, args.dst, sport, args.port, rng.getrandbits(32), window, mss)
            proto = socket.IPPROTO_TCP
        else:
            seg = udp(src, args.dst, sport, args.port, rng.randbytes(size))
            proto = socket.IPPROTO_UDP
        ident = rng.getrandbits(16)
        ttl = rng.choice([64, 128, 255, rng.randint(30, 250)])
        yield src, ipv4(src, args.dst, proto, seg, ident, ttl)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m multa_broker.lab.rawflood", description=__doc__.split("\n\n")[0])
    p.add_argument("--dst", type=lab_address, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=1000.0, help="packets per second")
    p.add_argument("--size", type=int, default=None, help="UDP payload bytes (default: drawn)")
    p.add_argument("--prefix", type=lab_prefix, action="append", required=True,
                   help="a /24 of unused lab addresses to draw sources from (repeatable)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        p.error(f"--count must be 1..{MAX_COUNT}")
    if not 0 < args.rate <= 100_000 or not 0 < args.port < 65536:
        p.error("--rate must be in (0, 100000] and --port in 1..65535")
    if args.size is not None and not 0 <= args.size <= MAX_SIZE:
        p.error(f"--size must be 0..{MAX_SIZE}")
    rng = random.Random(args.seed)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        p.error("a raw socket needs CAP_NET_RAW (run it inside the lab, as root)")
    gap, start, sent = 1.0 / args.rate, time.monotonic(), 0
    for i, (_src, pkt) in enumerate(packets(args, rng)):
        ahead = start + i * gap - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        try:
            sock.sendto(pkt, (args.dst, 0))
            sent += 1
        except OSError as e:  # a full queue drops a packet, as on a real link
            print(f"rawflood: send failed: {e}", file=sys.stderr)
    print(f"rawflood: sent {sent} of {args.count} packets to {args.dst}:{args.port}/{args.proto}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
