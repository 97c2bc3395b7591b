"""The random-source flood sender: packets, bounds and the lab-only checks (no root needed)."""

from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import struct

import pytest

from multa_broker.lab import floods, rawflood
from multa_broker.lab.network import HOSTS, LAB_NET


def _args(**kw):
    base = dict(dst="10.77.0.10", port=80, proto="tcp", count=50, rate=1000.0, size=None,
                prefix=["10.77.120", "10.77.121"], seed=3)
    return argparse.Namespace(**{**base, **kw})


def _valid_l4(pkt: bytes) -> bool:
    src, dst, proto = pkt[12:16], pkt[16:20], pkt[9]
    seg = pkt[20:]
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    return rawflood.checksum(pseudo + seg) == 0


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_every_packet_is_well_formed_and_from_a_new_lab_source(proto):
    pkts = list(rawflood.packets(_args(proto=proto), random.Random(3)))
    assert len(pkts) == 50
    sources = {src for src, _ in pkts}
    assert len(sources) > 40  # nearly every packet its own flow
    for src, pkt in pkts:
        assert ipaddress.ip_address(src) in LAB_NET and src.rsplit(".", 1)[0] in ("10.77.120", "10.77.121")
        assert rawflood.checksum(pkt[:20]) == 0 and _valid_l4(pkt)
        assert socket.inet_ntoa(pkt[12:16]) == src and socket.inet_ntoa(pkt[16:20]) == "10.77.0.10"
        assert pkt[9] == (6 if proto == "tcp" else 17)
        dport = struct.unpack("!H", pkt[22:24])[0]
        assert dport == 80
        if proto == "tcp":
            assert pkt[33] == 0x02  # SYN only


def test_it_refuses_what_is_outside_the_lab(capsys):
    with pytest.raises(SystemExit):
        rawflood.main(["--dst", "192.0.2.1", "--port", "80", "--count", "5", "--prefix", "10.77.100"])
    assert "outside the lab network" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rawflood.main(["--dst", "10.77.0.10", "--port", "80", "--count", "5", "--prefix", "10.78.1"])
    with pytest.raises(SystemExit):
        rawflood.main(["--dst", "10.77.0.10", "--port", "80", "--count", str(rawflood.MAX_COUNT + 1),
                       "--prefix", "10.77.100"])
    with pytest.raises(SystemExit):
        rawflood.main(["--dst", "10.77.0.10", "--port", "80", "--count", "5", "--prefix", "10.77.0"])
    assert "the lab's LAN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rawflood.main(["--dst", "10.77.0.10", "--port", "80", "--count", "5", "--prefix", "10.77.100",
                       "--proto", "udp", "--size", "70000"])
    assert "--size must be" in capsys.readouterr().err


def test_drawn_prefixes_hold_no_lab_host(tmp_path):
    from multa_broker.lab.scenario import Context

    used = {ip.rsplit(".", 1)[0] for ip, extra in HOSTS.values()} | {a.rsplit(".", 1)[0] for _, e in HOSTS.values() for a in e}
    for seed in range(100):
        ctx = Context("t", None, None, random.Random(seed), tmp_path)  # type: ignore[arg-type]
        for prefix in floods.random_prefixes(ctx):
            assert rawflood.lab_prefix(prefix) == prefix and prefix not in used
