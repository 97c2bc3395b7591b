"""Threat labels for the scans and floods found in the shared corpora (issue 13).

The built-in rules for nDPI's captures (synscan, tcp_scan, srvloc, NTPv2) and
Zeek's traces (nmap-vsn, rpc-portmap-sadmind, cooper-grill-dvwa, vnc-scanner).
Fixture-level tests use small nDPI result lines and flow keys written here, so
they need neither the shared corpus nor ndpiReader; the real-capture tests
skip, saying why, without the corpus. A rule that maps wrongly (the wrong
host, the wrong class, background traffic swept in) fails here.
"""

from __future__ import annotations

from collections import Counter

import pytest

from multa_broker.dataset.labelmap import builtin_sources
from multa_broker.dataset.ndpi import NdpiLabeller
from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey


def key(proto, a, pa, b, pb, ts=0.0):
    return FlowKey(proto, a, pa, b, pb, ts)


def builtin(name):
    return next(s for s in builtin_sources() if s.name == name)


def ndpi_labeller(tmp_path, capture: str, lines: list[str]) -> NdpiLabeller:
    out = tmp_path / f"{capture}.out"
    out.write_text("".join(f"\t{i}\t{line}\n" for i, line in enumerate(lines, 1)))
    return NdpiLabeller(builtin("ndpi"), out, f"pcap/{capture}")


# --- nDPI's captures (result-file lines in nDPI's format) ---

def test_synscan_probes_are_scan_without_port_guessed_service(tmp_path):
    lab = ndpi_labeller(tmp_path, "synscan.pcap", [
        "TCP 172.16.0.8:36050 <-> 64.13.134.52:22 [proto: 92/SSH][IP: 0/Unknown][Encrypted]"
        "[Confidence: Match by port][cat: RemoteAccess/12][1 pkts/58 bytes <-> 4 pkts/240 bytes]",
        "TCP 172.16.0.8:36050 -> 64.13.134.52:1234 [proto: 0/Unknown][IP: 0/Unknown]"
        "[Confidence: Unknown][cat: Unspecified/0][1 pkts/58 bytes -> 0 pkts/0 bytes]",
    ])
    scan = {"tunnel": "none", "threat": "scan"}
    # A SYN to 22 is no SSH session: nDPI's port guess is dropped, not kept.
    assert lab(key("tcp", "172.16.0.8", 36050, "64.13.134.52", 22)) == scan
    # nDPI left it Unknown; the rule still labels it (rules_alone).
    assert lab(key("tcp", "172.16.0.8", 36050, "64.13.134.52", 1234)) == scan
    # Another host's flow in the same capture is not the scan.
    assert lab(key("tcp", "172.16.0.9", 5000, "64.13.134.52", 80)) == {}


def test_tcp_scan_probes_are_scan(tmp_path):
    lab = ndpi_labeller(tmp_path, "tcp_scan.pcapng", [
        "TCP 192.168.1.178:56272 <-> 192.168.1.2:80 [proto: 7/HTTP][IP: 0/Unknown][ClearText]"
        "[Confidence: Match by port][cat: Web/5][3 pkts/198 bytes <-> 1 pkts/74 bytes]",
    ])
    assert lab(key("tcp", "192.168.1.178", 56272, "192.168.1.2", 80)) == {"tunnel": "none", "threat": "scan"}
    # The FIN/NULL/Xmas probes nDPI did not list at all are the scan too.
    assert lab(key("tcp", "192.168.1.178", 62971, "192.168.1.2", 3390))["threat"] == "scan"
    assert lab(key("tcp", "192.168.1.2", 80, "192.168.1.3", 40000)) == {}


SLP = "[proto: 185/Service_Location_Protocol][IP: 0/Unknown][ClearText][Confidence: DPI][cat: Network/14]"


def test_srvloc_scanners_are_scan_and_one_off_senders_unlabelled(tmp_path):
    lab = ndpi_labeller(tmp_path, "srvloc.pcap", [
        f"UDP 200.31.144.158:39908 -> 85.111.52.57:427 {SLP}",
        f"UDP 37.40.101.196:53106 -> 85.111.52.57:427 {SLP}",
    ])
    # 200.31.144.158 probed all ten sensors: scan; nDPI's SLP stays netmgmt.
    assert lab(key("udp", "200.31.144.158", 39908, "85.111.52.57", 427)) == {
        "service": "netmgmt", "encrypted": "cleartext", "tunnel": "none", "threat": "scan"}
    # 37.40.101.196 sent one probe: not enough to call it a sweep.
    assert "threat" not in lab(key("udp", "37.40.101.196", 53106, "85.111.52.57", 427))


def test_ntp_monlist_reflection_is_dos(tmp_path):
    lab = ndpi_labeller(tmp_path, "NTPv2.pcap", [
        "UDP 208.104.95.10:123 -> 78.46.76.2:80 [proto: 9/NTP][IP: 0/Unknown][ClearText]"
        "[Confidence: DPI][cat: System/18][1 pkts/410 bytes -> 0 pkts/0 bytes]",
    ])
    # The extractor takes the web port's side as originator; either way it is the flood.
    want = {"service": "netmgmt", "encrypted": "cleartext", "tunnel": "none", "threat": "dos"}
    assert lab(key("udp", "78.46.76.2", 80, "208.104.95.10", 123)) == want
    assert lab(key("udp", "208.104.95.10", 123, "78.46.76.2", 80)) == want


def test_rules_for_one_ndpi_capture_do_not_reach_another(tmp_path):
    # The same scanner address in a capture without a rule gets nDPI's labels only.
    lab = ndpi_labeller(tmp_path, "other.pcap", [f"UDP 200.31.144.158:39908 -> 85.111.52.57:427 {SLP}"])
    assert "threat" not in lab(key("udp", "200.31.144.158", 39908, "85.111.52.57", 427))
    assert lab(key("tcp", "172.16.0.8", 36050, "64.13.134.52", 1234)) == {}


# --- Zeek's traces (type: rules; the first glob that matches wins) ---

def zeek_rules(capture: str):
    rules = builtin("zeek-traces").rules_for(capture)
    assert rules is not None, capture
    return rules


def test_nmap_host_discovery_is_scan_and_its_dns_is_not():
    rules = zeek_rules("nmap-vsn.pcap")
    assert rules.label(key("tcp", "192.168.1.71", 58024, "192.168.1.1", 80)) == {"tunnel": "none", "threat": "scan"}
    assert rules.label(key("tcp", "192.168.1.71", 58602, "192.168.1.63", 443))["threat"] == "scan"
    assert rules.label(key("udp", "192.168.1.71", 64480, "192.168.1.1", 53)) is None


def test_sadmind_sweep_is_scan_and_overflow_is_exploit():
    rules = zeek_rules("rpc-portmap-sadmind.pcap")
    assert rules.label(key("udp", "202.77.162.213", 54793, "172.16.115.87", 111))["threat"] == "scan"
    assert rules.label(key("udp", "202.77.162.213", 56262, "172.16.112.50", 32773))["threat"] == "scan"
    assert rules.label(key("udp", "202.77.162.213", 60251, "172.16.115.20", 32773))["threat"] == "exploit"
    assert rules.label(key("udp", "202.77.162.213", 60249, "172.16.115.20", 111))["threat"] == "exploit"
    assert rules.label(key("udp", "10.0.0.1", 54793, "172.16.115.87", 111)) is None


def test_dvwa_sql_injection_is_exploit_not_benign_http():
    rules = zeek_rules("http/cooper-grill-dvwa.pcapng")
    assert rules.label(key("tcp", "192.168.111.148", 53796, "192.168.111.154", 80))["threat"] == "exploit"
    tail = rules.label(key("tcp", "192.168.111.148", 39004, "192.168.111.154", 80))
    assert tail == {"service": "http", "encrypted": "cleartext", "tunnel": "none"}
    # The other HTTP traces keep the folder's benign rule.
    assert zeek_rules("http/bro.org.pcap").label(key("tcp", "1.1.1.1", 5000, "2.2.2.2", 80))["threat"] == "benign"


def test_vnc_scanner_try_is_not_benign():
    rules = zeek_rules("rfb/vnc-scanner.pcap")
    assert rules.label(key("tcp", "192.168.0.11", 46381, "10.0.0.149", 5900)) == {"service": "remote", "tunnel": "none"}
    assert zeek_rules("rfb/vnc-mac-to-linux.pcap").label(
        key("tcp", "1.1.1.1", 5000, "2.2.2.2", 5900))["threat"] == "benign"


# --- the same rules on the real captures ---

def labelled(shared_data, source: str, capture: str):
    from multa_broker.capture import read_flows
    from multa_broker.dataset.build import BuildConfig, plan

    others = sorted(s.name for s in builtin_sources() if s.name != source)
    try:
        jobs = [j for j in plan(BuildConfig(shared_data, without=others)) if j.name == f"{source}/{capture}"]
    except MultaError as e:  # e.g. a capture without a result file and no ndpiReader
        pytest.skip(str(e))
    if not jobs:
        pytest.skip(f"{source}/{capture} not in the corpus")
    return [(f.key, jobs[0].labeller(f.key)) for f in read_flows(jobs[0].path, n=4)]


def threats(flows) -> Counter:
    return Counter((lab or {}).get("threat") for _, lab in flows)


def test_real_synscan_every_probe_is_scan(shared_data):
    flows = labelled(shared_data, "ndpi", "pcap/synscan.pcap")
    assert threats(flows) == {"scan": 1994}
    assert all("service" not in (lab or {}) for _, lab in flows)


def test_real_srvloc_scan_flows(shared_data):
    flows = labelled(shared_data, "ndpi", "pcap/srvloc.pcap")
    t = threats(flows)
    assert t["scan"] == 185 and set(t) == {"scan", None}
    assert {k.resp_p for k, lab in flows if (lab or {}).get("threat")} == {427}


def test_real_ntp_reflection_and_tcp_scan(shared_data):
    assert threats(labelled(shared_data, "ndpi", "pcap/NTPv2.pcap")) == {"dos": 1}
    assert threats(labelled(shared_data, "ndpi", "pcap/tcp_scan.pcapng")) == {"scan": 7}


def test_real_zeek_traces_scans_and_exploits(shared_data):
    assert threats(labelled(shared_data, "zeek-traces", "nmap-vsn.pcap")) == {"scan": 17, None: 1}
    assert threats(labelled(shared_data, "zeek-traces", "rpc-portmap-sadmind.pcap")) == {"scan": 13, "exploit": 5}
    assert threats(labelled(shared_data, "zeek-traces", "http/cooper-grill-dvwa.pcapng")) == {"exploit": 3, None: 1}
