"""The tor and p2p lab scenarios without root: registered with their tools, label rules as documented,
extra addresses free, info hashes right, and the set-up script installs their packages.

The scenarios themselves need root and network namespaces (``multa lab run --scenario tor
--scenario p2p``, docs/lab.md); here each is driven until its first process would start."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest

from multa_broker.flow import FlowKey
from multa_broker.lab import addrs, p2p, tor
from multa_broker.lab.network import LAB_NET
from multa_broker.lab.scenario import REGISTRY
from support.labrules import Started, rules_context

REPO = Path(__file__).resolve().parent.parent


def _first(key: FlowKey, rules):
    """The labels of the first rule matching ``key`` (as labels.label does for a flow)."""
    return next((r.labels for r in rules if r.matches(key)), None)


def _flow(orig: str, orig_p: int, resp: str, resp_p: int, proto: str = "tcp") -> FlowKey:
    return FlowKey(proto, orig, orig_p, resp, resp_p, 1.0)


def test_registered_with_their_tools():
    assert REGISTRY["tor"].kind == "tunnel"
    assert REGISTRY["p2p"].kind == "benign"
    assert {"tor", "tor-gencert", "nginx", "curl"} <= set(REGISTRY["tor"].needs)
    assert {"opentracker", "transmission-cli", "mktorrent"} <= set(REGISTRY["p2p"].needs)


def test_label_conventions():
    # nDPI's TLS.Tor: service tls (its master protocol), tunnel tor; a DirPort is plain HTTP.
    assert tor.TOR.as_dict() == {"service": "tls", "encrypted": "encrypted", "tunnel": "tor", "threat": "benign"}
    assert tor.TOR_DIR.as_dict() == {"service": "http", "encrypted": "cleartext", "tunnel": "none", "threat": "benign"}
    # nDPI's BitTorrent (peers and tracker announces): service p2p.
    assert p2p.P2P_CLEAR.as_dict() == {"service": "p2p", "encrypted": "cleartext", "tunnel": "none", "threat": "benign"}
    assert p2p.P2P_ENC.encrypted == "encrypted" and p2p.P2P_ENC.service == "p2p"
    assert p2p.TRACKER == p2p.P2P_CLEAR


def test_tor_rules_label_links_directory_exit_and_lookups(tmp_path):
    ctx = rules_context(tmp_path)
    with pytest.raises(Started):
        tor.tor(ctx)
    rules = ctx.rules
    relays = [*tor.AUTHORITIES, *tor.MIDDLES, *(a for _, a in tor.EXITS)]
    orport = next(iter(rules[0].ports))
    dirport = next(r for r in rules if r.labels == tor.TOR_DIR).ports
    assert orport in tor.OR_PORTS and len(dirport) == 1
    flows = [
        _flow("10.77.0.21", 40000, tor.AUTHORITIES[0], orport),   # client to a guard / directory
        _flow(tor.MIDDLES[0], 41000, tor.EXITS[0][1], orport),    # relay to relay
        _flow(tor.MIDDLES[1], 42000, tor.AUTHORITIES[2], next(iter(dirport))),  # descriptor upload
        _flow(tor.EXITS[0][1], 43000, "10.77.0.12", 80),         # the exit fetches the page
        _flow("10.77.0.66", 44000, "10.77.0.53", 53, "udp"),      # the exit's lookup
    ]
    got = [_first(k, rules) for k in flows]
    assert None not in got
    assert got[:2] == [tor.TOR, tor.TOR]
    assert [lab.service for lab in got[2:]] == ["http", "http", "dns"]
    assert all(lab.tunnel == "none" for lab in got[2:])
    # Every relay's ORPort has its rule.
    assert {r.server for r in rules if r.labels == tor.TOR} == set(relays)


def _torrent(tmp_path: Path) -> p2p.Torrent:
    return p2p.Torrent(tmp_path / "x.torrent", "x.bin", {"x.bin": "0" * 40}, 1000, "0" * 40,
                       "http://10.77.0.11:6969/announce")


def test_p2p_rounds_label_every_peer_alike(tmp_path):
    seen = set()
    for seed in range(1, 30):
        ctx = rules_context(tmp_path, seed)
        places = [("cli", "10.77.0.20"), ("atk", "10.77.0.66"), ("cli", "10.77.0.25"), ("atk", "10.77.0.61")]
        with pytest.raises(Started):
            p2p._round(ctx, 0, _torrent(tmp_path), places, set())
        labels = {r.labels for r in ctx.rules}
        assert len(labels) == 1  # one encryption mode per round: every peer follows it
        seen |= labels
        assert 2 <= len(ctx.rules) <= 4  # the seeder and one to three leechers
        assert ctx.rules[0].server == "10.77.0.10"
        for r in ctx.rules:
            (port,) = r.ports
            assert port in p2p.PEER_PORTS and port < 32768  # below the kernel's ephemeral ports
            assert r.protos == frozenset({"tcp", "udp"})
    assert seen == {p2p.P2P_CLEAR, p2p.P2P_ENC}


def test_p2p_tracker_rule_comes_first(tmp_path):
    ctx = rules_context(tmp_path)
    with pytest.raises(Started):
        p2p.p2p(ctx)
    (rule,) = ctx.rules
    assert rule.labels == p2p.TRACKER and rule.server == "10.77.0.11" and rule.protos == frozenset({"tcp", "udp"})


def test_info_hash_is_the_sha1_of_the_info_dictionary():
    info = b"d6:lengthi1000e4:name5:x.bin12:piece lengthi32768e6:pieces20:" + b"a" * 20 + b"e"
    torrent = b"d8:announce31:http://10.77.0.11:6969/announce10:created by3:lab4:info" + info + b"e"
    assert p2p.info_hash(torrent) == hashlib.sha1(info).hexdigest()
    with pytest.raises(ValueError):
        p2p.info_hash(b"d8:announce3:urle")


def test_extra_addresses_are_free_lab_addresses():
    extra = [*tor.AUTHORITIES, *tor.MIDDLES, *(a for _, a in tor.EXITS), *tor.CLIENT_EXTRA]
    assert len(set(extra)) == len(extra)
    fixed = addrs.fixed_addresses()
    for a in extra + [a for _, a in p2p.EXTRA_PEERS]:
        ip = ipaddress.ip_address(a)
        assert ip in LAB_NET and a not in fixed
        assert int(str(a).rsplit(".", 1)[1]) in addrs.EXTRA_RANGE  # never a spoofed flood source (100-250)


def test_setup_script_installs_tor_and_bittorrent():
    text = (REPO / "scripts" / "lab-setup.sh").read_text().replace("\n", " ")
    for pkg in ("tor", "aria2", "opentracker", "mktorrent", "transmission-cli"):
        assert f" {pkg} " in text or f" {pkg}\"" in text, pkg
