"""Lab labelling without root: rule matching, the labels.jsonl format, scenario names,
address guard, and the committed lab capture checked against its labels."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from multa_broker.errors import MultaError
from multa_broker.flow import Flow, FlowKey
from multa_broker.lab import labels as L
from multa_broker.lab.network import assert_lab_address
from multa_broker.lab.runner import scenario_names
from multa_broker.lab.scenario import REGISTRY, UNAVAILABLE
from multa_broker.taxonomy import TASKS
from support.labfixture import assert_every_flow_labelled_once, fixture_records

FIXTURES = Path(__file__).parent / "fixtures" / "lab"
REPO = Path(__file__).resolve().parent.parent

HTTP = L.Labels("http", "cleartext", "none", "benign")
SCAN = L.Labels(None, None, "none", "scan")
FTP = L.Labels("ftp", "cleartext", "none", "benign")


def flow(proto, a, pa, b, pb, ts=1.0):
    return Flow(FlowKey(proto, a, pa, b, pb, ts), [60], [True], [0])


def test_labels_reject_unknown_classes():
    with pytest.raises(ValueError, match="unknown class 'web'"):
        L.Labels("web", "cleartext", "none", "benign")
    assert L.Labels(None, None, None, "scan").as_dict() == {"service": None, "encrypted": None,
                                                          "tunnel": None, "threat": "scan"}


def test_rule_matches_server_side_whatever_the_orientation():
    rule = L.Rule(FTP, server="10.77.0.10", ports=L.ports(21, 20, range(30000, 30100)), protos=frozenset({"tcp"}))
    assert rule.matches(flow("tcp", "10.77.0.20", 40000, "10.77.0.10", 21).key)
    # Active-mode data: the server opens the connection from port 20.
    assert rule.matches(flow("tcp", "10.77.0.10", 20, "10.77.0.20", 40001).key)
    assert rule.matches(flow("tcp", "10.77.0.20", 40002, "10.77.0.10", 30099).key)
    assert not rule.matches(flow("tcp", "10.77.0.20", 40002, "10.77.0.10", 30100).key)
    assert not rule.matches(flow("udp", "10.77.0.20", 40000, "10.77.0.10", 21).key)
    assert not rule.matches(flow("tcp", "10.77.0.20", 40000, "10.77.0.11", 21).key)
    # ICMP has no ports: a port-bound rule never takes it.
    assert not rule.matches(flow("icmp", "10.77.0.10", 3, "10.77.0.20", 3).key)


def test_first_matching_rule_wins_and_unmatched_are_reported():
    rules = [L.Rule(SCAN, client="10.77.0.66"),
             L.Rule(HTTP, server="10.77.0.10", ports=L.ports(80), protos=frozenset({"tcp"}))]
    flows = [flow("tcp", "10.77.0.66", 5555, "10.77.0.10", 80),   # attacker hits the web port: scan
             flow("icmp", "10.77.0.10", 0, "10.77.0.66", 8),      # reply to the attacker's ping: scan
             flow("tcp", "10.77.0.20", 41000, "10.77.0.10", 80),  # client browsing: http
             flow("udp", "10.77.0.20", 41000, "10.77.0.10", 123)]  # nothing said about NTP
    out = L.label(flows, rules)
    assert [i.labels.threat for i in out.labelled] == ["scan", "scan", "benign"]
    assert out.unmatched == [flows[3].key]


def test_records_round_trip_in_the_documented_field_order(tmp_path):
    item = L.Labelled(FlowKey("tcp", "10.77.0.20", 41000, "10.77.0.10", 80, 1764231234.1234567), HTTP,
                      L.Rule(HTTP))
    path = tmp_path / "labels.jsonl"
    assert L.write(path, [L.record("http-s1.pcap", "http", item)], append=False) == 1
    (obj,) = L.read(path)
    assert tuple(obj) == L.LABEL_FIELDS
    assert obj["ts"] == 1764231234.123457 and obj["capture"] == "http-s1.pcap" and obj["scenario"] == "http"
    path.write_text(json.dumps({"capture": "x"}) + "\n")
    with pytest.raises(MultaError, match="fields"):
        L.read(path)


def test_counts_count_missing_as_null():
    recs = [{**{t: None for t in TASKS}, "threat": "scan"}, {"service": "http", "encrypted": "cleartext",
                                                           "tunnel": "none", "threat": "benign"}]
    c = L.counts(recs)
    assert c["service"] == {"http": 1, "null": 1} and c["threat"] == {"benign": 1, "scan": 1}


def test_scenario_names_groups_and_errors():
    assert scenario_names(None) == list(REGISTRY) + list(UNAVAILABLE)
    assert scenario_names(["http", "scan-syn", "http"]) == ["http", "scan-syn"]
    kinds = {n: REGISTRY[n].kind for n in scenario_names(["tunnel"])}
    assert set(kinds.values()) == {"tunnel"} and {"openvpn-udp", "openvpn-tcp", "wireguard", "iodine"} <= set(kinds)
    with pytest.raises(MultaError, match="unknown scenario 'nope'"):
        scenario_names(["nope"])


def test_every_listed_scenario_is_registered():
    required = {"http", "https", "dns", "ssh", "ftp", "smtp", "mqtt", "redis", "openvpn-udp", "openvpn-tcp",
                "wireguard", "iodine", "ipsec", "scan-syn", "scan-connect", "scan-udp", "scan-version",
                "scan-ping", "bf-ssh", "bf-ftp", "bf-http", "dos-synflood", "dos-slowloris", "exploit-sqli"}
    assert required <= set(REGISTRY)
    assert "c2-beacon" in UNAVAILABLE  # skipped with a stated reason, never faked


def test_targets_outside_the_lab_are_refused():
    assert assert_lab_address("10.77.0.10") == "10.77.0.10"
    assert assert_lab_address("10.77.0.0/24") == "10.77.0.0/24"
    for bad in ("10.78.0.1", "127.0.0.1", "8.8.8.8", "10.0.0.0/8", "192.168.1.1"):
        with pytest.raises(MultaError, match="outside the lab"):
            assert_lab_address(bad)


def test_clean_refuses_foreign_prefixes():
    from multa_broker.lab.network import clean
    with pytest.raises(MultaError, match="refusing"):
        clean("docker")


def test_setup_script_installs_what_ci_needs():
    """The CI package set is part of the full set, and each core lab tool is covered."""
    text = (REPO / "scripts" / "lab-setup.sh").read_text()
    ci = re.search(r'CI_PACKAGES="([^"]+)"', text).group(1).split()
    # iptables: the path-delay queue test (tests/test_lab_netdelay.py) and MSS clamping.
    assert {"iproute2", "ethtool", "tcpdump", "curl", "nmap", "nginx-light", "iptables"} == set(ci)
    assert "$CI_PACKAGES" in re.search(r'ALL_PACKAGES="([^"]+)"', text, re.S).group(1)
    ci_run = (REPO / ".ci" / "run").read_text()
    assert all(pkg in ci_run for pkg in ci), "the CI runner installs the CI lab packages"


# -- the committed capture (made by `multa lab run --quick`, see tests/fixtures/lab/README) ----------------

def _fixture_records():
    return fixture_records(FIXTURES)


def test_fixture_labels_name_real_flows_of_the_capture():
    assert_every_flow_labelled_once(FIXTURES, _fixture_records())


def test_fixture_labels_follow_the_scenarios():
    records = _fixture_records()
    by = Counter((r["scenario"], r["service"], r["threat"]) for r in records)
    assert by[("http", "http", "benign")] >= 2
    assert by[("scan-syn", None, "scan")] >= 20
    for r in records:
        for task in TASKS:
            assert r[task] is None or r[task] in TASKS[task]
        if r["threat"] == "scan":
            assert "10.77.0.66" in (r["orig_h"], r["resp_h"])
        if r["service"] == "http" and r["threat"] == "benign":
            assert 80 in (r["orig_p"], r["resp_p"]) and "10.77.0.20" in (r["orig_h"], r["resp_h"])


def test_fixture_labels_load_in_the_corpus_builder():
    """The corpus builder's JSON-lines source reads the lab's file and labels every flow."""
    from multa_broker.capture import read_flows
    from multa_broker.dataset.jsonl import JsonlLabels
    _fixture_records()
    source = JsonlLabels.load(FIXTURES / "labels.jsonl")
    assert source.captures == ["http-s5.pcap", "scan-syn-s5.pcap"]
    for capture in source.captures:
        label = source.labeller(capture)
        for f in read_flows(FIXTURES / capture, verify_checksums=False):
            got = label(f.key)
            assert got.get("threat") in ("benign", "scan"), (capture, f.key, got)


def test_missing_tools_skip_a_scenario_with_the_reason():
    from multa_broker.lab.scenario import ScenarioSpec
    spec = ScenarioSpec("x", "benign", "", lambda ctx: None, needs=("sh", "no-such-lab-tool"))
    assert spec.missing() == "missing no-such-lab-tool (install with `multa lab setup`)"
    assert ScenarioSpec("y", "benign", "", lambda ctx: None, needs=("sh",)).missing() is None
