"""Label sources: the YAML format, nDPI parsing and mapping, JSON-lines joins, capture splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from multa_broker.dataset.jsonl import JsonlLabels
from multa_broker.dataset.labelmap import builtin_sources, load_source, parse_source
from multa_broker.dataset.ndpi import NdpiLabeller, parse_out
from multa_broker.dataset.split import assign_splits
from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey

NDPI_OUT = (
    "Guessed flow protos:\t1\n\n"
    "\t1\tTCP 192.168.2.126:45380 <-> 161.117.13.29:80 [proto: 7.295/HTTP.1kxun][IP: 274/Alibaba]"
    "[ClearText][Confidence: DPI][cat: Streaming/17][7 pkts/4845 bytes <-> 73 pkts/178280 bytes]\n"
    "\t2\tTCP 192.168.1.252:51112 <-> 38.229.70.53:443 [proto: 91.163/TLS.Tor][Encrypted][cat: VPN/2]\n"
    "\t3\tUDP [fe80::9bd:81dd:2fdc:5750]:1900 -> [ff02::c]:1900 [proto: 12/SSDP][ClearText][cat: Network/14]\n"
    "\t4\tICMP 10.24.82.188:0 -> 10.188.191.1:0 [proto: 81/ICMP][ClearText][cat: Network/14]\n"
    "\t5\tUDP 10.0.0.1:5000 <-> 10.0.0.2:6000 [proto: 0/Unknown][cat: Unspecified/0]\n"
    "\t6\tTCP 10.0.0.1:1000 <-> 10.0.0.2:2000 [proto: 999/SomethingNew][Encrypted][cat: Game/8]\n"
)


def key(proto, a, pa, b, pb, ts=0.0):
    return FlowKey(proto, a, pa, b, pb, ts)


def ndpi_source():
    return next(s for s in builtin_sources() if s.kind == "ndpi")


def test_builtin_sources_parse_and_use_known_classes():
    kinds = {s.name: s.kind for s in builtin_sources()}
    assert kinds == {"arkime": "arkime", "ndpi": "ndpi", "pcap-attack": "ndpi", "stopddos": "ndpi",
                     "stratosphere": "rules", "suricata-verify": "ndpi", "zeek-traces": "rules"}
    # Every built-in says where its captures come from, for the data card.
    assert all(s.provenance and s.licence for s in builtin_sources())


def test_parse_out_reads_flow_lines_only(tmp_path):
    out = tmp_path / "x.pcap.out"
    out.write_text(NDPI_OUT)
    flows = parse_out(out)
    assert [f.protocol for f in flows] == ["HTTP.1kxun", "TLS.Tor", "SSDP", "ICMP", "Unknown", "SomethingNew"]
    assert flows[2].a == ("fe80::9bd:81dd:2fdc:5750", 1900)
    assert flows[0].encrypted is False and flows[1].encrypted is True and flows[4].encrypted is None
    assert flows[1].category == "VPN"


def test_ndpi_mapping_follows_conventions(tmp_path):
    out = tmp_path / "x.pcap.out"
    out.write_text(NDPI_OUT)
    lab = NdpiLabeller(ndpi_source(), out, "pcap/x.pcap")
    # App inside HTTP is service http; direction of the 5-tuple does not matter.
    assert lab(key("tcp", "161.117.13.29", 80, "192.168.2.126", 45380)) == {
        "service": "http", "encrypted": "cleartext", "tunnel": "none"}
    # TLS.Tor: service tls, tunnel tor, even though the VPN category clears the default.
    assert lab(key("tcp", "192.168.1.252", 51112, "38.229.70.53", 443)) == {
        "service": "tls", "encrypted": "encrypted", "tunnel": "tor"}
    assert lab(key("udp", "fe80::9bd:81dd:2fdc:5750", 1900, "ff02::c", 1900))["service"] == "netmgmt"
    # ICMP joins on addresses only: our ports are type/counterpart, nDPI prints 0.
    assert lab(key("icmp", "10.24.82.188", 8, "10.188.191.1", 0))["service"] == "netmgmt"
    # Unknown: no labels at all; a named but unmapped protocol: service other.
    assert lab(key("udp", "10.0.0.1", 5000, "10.0.0.2", 6000)) == {}
    assert lab(key("tcp", "10.0.0.1", 1000, "10.0.0.2", 2000))["service"] == "other"
    assert lab(key("tcp", "1.1.1.1", 1, "2.2.2.2", 2)) == {}


def test_capture_override_marks_iodine_dns_as_tunnel(tmp_path):
    out = tmp_path / "dns-tunnel-iodine.pcap.out"
    out.write_text("\t1\tUDP 10.0.2.30:44639 <-> 10.0.2.20:53 [proto: 5/DNS][ClearText][cat: Network/14]\n")
    lab = NdpiLabeller(ndpi_source(), out, "pcap/dns-tunnel-iodine.pcap")
    assert lab(key("udp", "10.0.2.30", 44639, "10.0.2.20", 53)) == {
        "service": "dns", "encrypted": "cleartext", "tunnel": "dns-tunnel"}


def test_rules_first_match_wins_and_missing_stays_missing():
    src = parse_source({
        "type": "rules", "root": ".",
        "captures": [{"glob": "a/*.pcap", "rules": [
            {"match": {"proto": "tcp", "port": [22, 2222]}, "labels": {"service": "ssh", "threat": None}},
            {"match": {"net": "10.0.0.0/8"}, "labels": {"threat": "scan"}},
        ]}],
    }, "test.yaml")
    rules = src.rules_for("a/x.pcap")
    assert src.rules_for("b/x.pcap") is None
    assert rules.label(key("tcp", "1.2.3.4", 5555, "5.6.7.8", 2222)) == {"service": "ssh", "threat": None}
    assert rules.label(key("udp", "10.1.1.1", 5, "5.6.7.8", 53)) == {"threat": "scan"}
    assert rules.label(key("udp", "11.1.1.1", 5, "5.6.7.8", 53)) is None


@pytest.mark.parametrize("doc, message", [
    ({"type": "nope"}, "'type' must be one of"),
    ({"type": "rules", "captures": [{"glob": "*", "rules": [{"match": {"colour": 1}}]}]}, "unknown match key"),
    ({"type": "rules", "captures": [{"glob": "*", "rules": [{"labels": {"service": "smtp"}}]}]},
     "unknown class 'smtp' for task 'service'"),
    ({"type": "rules", "captures": [{"glob": "*", "rules": [{"labels": {"colour": "red"}}]}]}, "unknown task"),
])
def test_bad_sources_are_refused_with_the_file_named(doc, message):
    with pytest.raises(MultaError, match=message) as e:
        parse_source(doc, "mine.yaml")
    assert "mine.yaml" in str(e.value)


def test_bad_yaml_file_is_one_line_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("type: [rules\n")
    with pytest.raises(MultaError, match="bad.yaml: invalid YAML"):
        load_source(p)


def test_jsonl_join_picks_nearest_ts(tmp_path):
    rows = [
        {"capture": "a.pcap", "proto": "tcp", "orig_h": "10.0.0.1", "orig_p": 1, "resp_h": "10.0.0.2",
         "resp_p": 80, "ts": 100.0, "service": "http", "encrypted": "cleartext", "tunnel": "none", "threat": "benign"},
        {"capture": "a.pcap", "proto": "tcp", "orig_h": "10.0.0.1", "orig_p": 1, "resp_h": "10.0.0.2",
         "resp_p": 80, "ts": 200.0, "service": "http", "encrypted": None, "tunnel": "none", "threat": "dos"},
    ]
    p = tmp_path / "labels.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lab = JsonlLabels.load(p).labeller("a.pcap")
    assert lab(key("tcp", "10.0.0.1", 1, "10.0.0.2", 80, 100.2))["threat"] == "benign"
    assert lab(key("tcp", "10.0.0.1", 1, "10.0.0.2", 80, 199.9)) == {"service": "http", "tunnel": "none", "threat": "dos"}
    assert lab(key("tcp", "10.0.0.1", 1, "10.0.0.2", 80, 150.0)) == {}  # too far from both
    assert lab(key("tcp", "10.0.0.2", 80, "10.0.0.1", 1, 100.0)) == {}  # direction matters here


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "labels.jsonl"
    p.write_text('{"capture": "a.pcap"}\n')
    with pytest.raises(MultaError, match=r"labels.jsonl:1: bad label line"):
        JsonlLabels.load(p)


def test_split_is_by_capture_deterministic_and_spreads_rare_classes():
    caps = {f"c{i}": Counter({("service", "http"): 10}) for i in range(20)}
    caps.update({f"r{i}": Counter({("threat", "scan"): 3}) for i in range(3)})
    a = assign_splits(caps, seed=7)
    assert a == assign_splits(caps, seed=7)
    assert set(a) == set(caps)
    # The three captures of the rare class land in three different splits.
    assert sorted(a[f"r{i}"] for i in range(3)) == [0, 1, 2]
    common = Counter(a[f"c{i}"] for i in range(20))
    assert common[0] >= 12 and common[1] >= 2 and common[2] >= 2
    with pytest.raises(ValueError):
        assign_splits(caps, ratios=(0.5, 0.5, 0.5))


def test_split_puts_a_capture_holding_most_of_a_class_into_train():
    caps = {f"c{i}": Counter({("service", "vpn"): 5, ("service", "dns"): 5}) for i in range(10)}
    caps["huge"] = Counter({("service", "vpn"): 300})
    a = assign_splits(caps, seed=3)
    assert a["huge"] == 0
    # The rule that spreads a class first still gives val and test some vpn.
    assert {a[f"c{i}"] for i in range(10)} == {0, 1, 2}


def test_kept_splits_survive_new_captures_that_would_move_them():
    caps = {f"c{i}": Counter({("service", "dns"): 10}) for i in range(10)}
    caps["a"] = Counter({("threat", "dos"): 150})
    caps["b"] = Counter({("threat", "dos"): 160})
    before = assign_splits(caps, seed=1)
    grown = dict(caps)
    grown.update({f"n{i}": Counter({("threat", "dos"): 300}) for i in range(4)})
    after = assign_splits(grown, seed=1)
    moved = {c for c in caps if after[c] != before[c]}
    assert moved  # without pinning, adding captures moves old ones (the reason for `fixed`)
    kept = assign_splits(grown, seed=1, fixed={**before, "gone": 2})
    assert all(kept[c] == before[c] for c in caps) and "gone" not in kept
    assert set(kept) == set(grown)
    # The new captures are still placed around the pinned ones: some train, not all in one split.
    assert 0 in {kept[f"n{i}"] for i in range(4)}
    with pytest.raises(ValueError):
        assign_splits(grown, fixed={"a": 5})


def test_split_of_a_class_in_two_captures_trains_on_the_bigger():
    caps = {f"c{i}": Counter({("service", "dns"): 10}) for i in range(10)}
    caps["small"] = Counter({("threat", "c2"): 20})
    caps["big"] = Counter({("threat", "c2"): 300})
    a = assign_splits(caps, seed=1)
    assert (a["big"], a["small"]) == (0, 2)
