"""Zeek 8.0's default ``likely_server_ports``, which decides who the originator is.

Zeek builds the set at script load time: every analyzer script in
``scripts/base`` that registers well-known ports does
``redef likely_server_ports += { ports };``. This static copy was derived from
Zeek v8.0.10's ``scripts/base/{protocols,packet-protocols}/*/main.zeek`` (all
loaded by the default ``base/init-default.zeek``) by collecting the port sets
each of those redefs adds. ``zeek -e 'print likely_server_ports'`` on a Zeek
8.0.10 built *without* Spicy printed the same set minus the ports of the
Spicy-based analyzers, whose scripts load only ``@if ( have_spicy_analyzers() )``:
LDAP (389/tcp, 3268/tcp, 389/udp), PostgreSQL (5432/tcp) and Redis
(6379/tcp). Standard Zeek builds include Spicy, so they are kept here. A Zeek
deployment that redefines the set, or loads scripts that add to it, must be
mirrored here, or originators will differ for those ports.
"""

from __future__ import annotations

#: script -> ports it adds (tcp, udp); kept per script so a diff against a new
#: Zeek release is easy to review.
SPICY_ONLY = ("protocols/ldap", "protocols/postgresql", "protocols/redis")
_BY_SCRIPT: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "packet-protocols/ayiya": ((), (5072,)),
    "packet-protocols/geneve": ((), (6081,)),
    "packet-protocols/gtpv1": ((), (2152, 2123)),
    "packet-protocols/teredo": ((), (3544,)),
    "packet-protocols/vxlan": ((), (4789,)),
    "protocols/dce-rpc": ((135,), ()),
    "protocols/dhcp": ((), (67,)),
    "protocols/dnp3": ((20000,), (20000,)),
    "protocols/dns": ((53,), (53, 137, 5353, 5355)),
    "protocols/finger": ((79,), ()),
    "protocols/ftp": ((21, 2811), ()),
    "protocols/http": ((80, 81, 631, 1080, 3128, 8000, 8080, 8888), ()),
    "protocols/imap": ((143,), ()),
    "protocols/irc": ((6666, 6667, 6668, 6669), ()),
    "protocols/krb": ((88,), (88,)),
    "protocols/ldap": ((389, 3268), (389,)),
    "protocols/modbus": ((502,), ()),
    "protocols/mqtt": ((1883,), ()),
    "protocols/ntp": ((), (123,)),
    "protocols/postgresql": ((5432,), ()),
    "protocols/radius": ((), (1812,)),
    "protocols/rdp": ((3389,), (3389,)),
    "protocols/redis": ((6379,), ()),
    "protocols/sip": ((), (5060,)),
    "protocols/smb": ((139, 445), ()),
    "protocols/smtp": ((25, 587), ()),
    "protocols/snmp": ((), (161, 162)),
    "protocols/socks": ((1080,), ()),
    "protocols/ssh": ((22,), ()),
    "protocols/ssl": ((443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223), (443,)),
    "protocols/syslog": ((), (514,)),
    "protocols/xmpp": ((5222, 5269), ()),
}

LIKELY_SERVER_PORTS_TCP: frozenset[int] = frozenset(p for tcp, _ in _BY_SCRIPT.values() for p in tcp)
LIKELY_SERVER_PORTS_UDP: frozenset[int] = frozenset(p for _, udp in _BY_SCRIPT.values() for p in udp)

#: Ports whose TCP connections get a 1 hour inactivity timeout once established
#: (Conn::port_inactivity_timeouts in scripts/base/protocols/conn/inactivity.zeek).
LONG_INACTIVITY_TCP_PORTS: frozenset[int] = frozenset({21, 22, 23, 513})
LONG_INACTIVITY_TIMEOUT = 3600.0


def zeek_notation() -> list[str]:
    """The set as Zeek prints ports (``80/tcp``), sorted, for comparing with a real Zeek."""
    out = [f"{p}/tcp" for p in LIKELY_SERVER_PORTS_TCP] + [f"{p}/udp" for p in LIKELY_SERVER_PORTS_UDP]
    return sorted(out, key=lambda s: (s.split("/")[1], int(s.split("/")[0])))


def parse_zeek_print(text: str) -> tuple[frozenset[int], frozenset[int]]:
    """(tcp, udp) port sets from the output of ``zeek -e 'print likely_server_ports'``."""
    tcp, udp = set(), set()
    for item in text.replace("{", " ").replace("}", " ").replace(",", " ").split():
        num, _, proto = item.partition("/")
        if num.isdigit():
            (tcp if proto == "tcp" else udp if proto == "udp" else set()).add(int(num))
    return frozenset(tcp), frozenset(udp)
