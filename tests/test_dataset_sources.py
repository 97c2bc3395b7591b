"""The label sources for the wider corpora: ndpiReader output, Arkime sessions, and the
built-in YAML rules on real captures (StopDDoS, PCAP-ATTACK, suricata-verify, Arkime).

Fixture-level tests need neither the shared corpus nor ndpiReader; the
real-capture tests skip, saying why, when either is absent. Each real-capture
test names flows whose class is known from the capture, so a rule that maps
wrongly fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from multa_broker.dataset.arkime import ArkimeLabeller, parse_test
from multa_broker.dataset.build import BuildConfig, plan
from multa_broker.dataset.labelmap import builtin_sources, parse_source
from multa_broker.dataset.ndpi import NdpiLabeller, parse_out
from multa_broker.dataset.ndpireader import NdpiReader, reader_version
from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey

FIXTURES = Path(__file__).parent / "fixtures" / "dataset"


def key(proto, a, pa, b, pb, ts=0.0):
    return FlowKey(proto, a, pa, b, pb, ts)


def builtin(name):
    return next(s for s in builtin_sources() if s.name == name)


# --- ndpiReader 4.2 output (fixture: tests/fixtures/dataset/ndpireader-4.2.out) ---

def test_parse_ndpireader_42_output_with_confidence():
    flows = parse_out(FIXTURES / "ndpireader-4.2.out")
    # Banner, statistics and the JA3 host table are not flows.
    assert [f.protocol for f in flows] == ["TLS", "Kerberos", "Kerberos", "DCE_RPC", "ICMP", "QUIC.Google",
                                           "AmazonAWS", "Unknown"]
    assert [f.confidence for f in flows][:3] == ["Match by port", "DPI", "DPI"]
    assert flows[0].guessed and not flows[1].guessed
    assert flows[5].a == ("2a00:d40:1:3:7aac:c0ff:fea7:d4c", 45931)


def test_dpi_only_drops_guesses_and_42_names_map(tmp_path):
    src = builtin("pcap-attack")
    assert src.dpi_only
    lab = NdpiLabeller(src, FIXTURES / "ndpireader-4.2.out", "x.pcapng")
    # "Match by port" TLS on an RPC port: no labels at all.
    assert lab(key("tcp", "172.16.66.1", 52419, "172.16.66.36", 49668)) == {}
    # Kerberos by DPI: windows, clear text (nDPI's protocol flag).
    assert lab(key("udp", "172.16.66.36", 88, "172.16.66.1", 50449)) == {
        "service": "windows", "encrypted": "cleartext", "tunnel": "none"}
    # nDPI 4.2 spells DCERPC "DCE_RPC": still windows, not "other".
    assert lab(key("tcp", "172.16.66.1", 51662, "172.16.66.36", 60283))["service"] == "windows"
    # A SYN to a cloud address "is" AmazonAWS/encrypted only by address: dropped.
    assert lab(key("tcp", "5.234.137.12", 4431, "10.10.10.10", 30120)) == {}
    # Without dpi_only (nDPI's own corpus) the guess counts, as before.
    guessing = NdpiLabeller(builtin("ndpi"), FIXTURES / "ndpireader-4.2.out", "pcap/x.pcap")
    assert guessing(key("tcp", "172.16.66.1", 52419, "172.16.66.36", 49668))["service"] == "tls"


def test_rules_alone_labels_flows_ndpi_cannot_name():
    doc = {"type": "ndpi", "tables": "ndpi", "dpi_only": True, "rules_alone": True,
           "captures": [{"glob": "*", "rules": [{"match": {"resp_p": 6000}, "labels": {"threat": "dos"}}]}]}
    lab = NdpiLabeller(parse_source(doc, "t.yaml"), FIXTURES / "ndpireader-4.2.out", "x.pcap")
    assert lab(key("udp", "10.0.0.1", 5000, "10.0.0.2", 6000)) == {"threat": "dos"}
    doc["rules_alone"] = False
    lab = NdpiLabeller(parse_source(doc, "t.yaml"), FIXTURES / "ndpireader-4.2.out", "x.pcap")
    assert lab(key("udp", "10.0.0.1", 5000, "10.0.0.2", 6000)) == {}


def test_tables_inherit_and_bad_keys_are_refused():
    src = parse_source({"type": "ndpi", "tables": "ndpi", "protocols": {"HTTP": {"service": "other"}}}, "t.yaml")
    assert src.protocols["DNS"] == {"service": "dns"} and src.protocols["HTTP"] == {"service": "other"}
    with pytest.raises(MultaError, match="t.yaml: 'tables: nope'"):
        parse_source({"type": "ndpi", "tables": "nope"}, "t.yaml")
    with pytest.raises(MultaError, match="t.yaml: unknown key"):
        parse_source({"type": "ndpi", "dpi-only": True}, "t.yaml")


def test_missing_ndpireader_is_one_clear_line(monkeypatch, tmp_path):
    with pytest.raises(MultaError) as e:
        reader_version("ndpiReader-that-does-not-exist")
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install libndpi-bin" in msg


def test_ndpi_source_without_results_needs_the_reader(tmp_path):
    (tmp_path / "caps").mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "lab" / "http-s5.pcap", tmp_path / "caps" / "a.pcap")
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("type: ndpi\nroot: caps\ntables: ndpi\n")
    import multa_broker.dataset.build as build_mod

    class NoReader(NdpiReader):
        @property
        def version(self):
            return reader_version("ndpiReader-that-does-not-exist")

    orig = build_mod.NdpiReader
    build_mod.NdpiReader = NoReader
    try:
        with pytest.raises(MultaError, match=r"s\.yaml: .*libndpi-bin.*--without s$"):
            plan(BuildConfig(tmp_path, sources=[yaml_file], builtin=False))
    finally:
        build_mod.NdpiReader = orig


# --- Arkime (fixture: tests/fixtures/dataset/arkime-sample.test) ---

def test_parse_arkime_test_file():
    sessions = parse_test(FIXTURES / "arkime-sample.test")
    # The SCTP session is left out: the extractor makes no SCTP flows.
    assert len(sessions) == 7
    assert sessions[0].protocols == ("http", "tcp") and sessions[0].b == ("10.156.206.202", 80)
    assert sessions[0].ts == pytest.approx(1361891420.707)


def test_arkime_mapping_and_join():
    lab = ArkimeLabeller(builtin("arkime"), FIXTURES / "arkime-sample.test", "x.pcap")
    ts = 1361891420.9
    assert lab(key("tcp", "10.172.10.16", 49323, "10.156.206.202", 80, ts)) == {
        "service": "http", "encrypted": "cleartext", "tunnel": "none"}
    # Direction does not matter; ntlm and smb agree on windows.
    assert lab(key("tcp", "10.0.0.9", 445, "10.0.0.5", 50000, 1361891425.0))["service"] == "windows"
    assert lab(key("tcp", "10.0.0.5", 50001, "93.184.216.34", 443, 1361891430.0)) == {
        "service": "tls", "encrypted": "encrypted", "tunnel": "none"}
    # http and tls disagree on service and on encrypted: both missing, tunnel kept.
    assert lab(key("tcp", "10.0.0.5", 50002, "93.184.216.34", 8443, 1361891431.0)) == {"tunnel": "none"}
    # Inside GTP: skipped. Bare udp: nothing named. ICMP joins on addresses.
    assert lab(key("udp", "172.16.1.1", 40000, "172.16.1.2", 53, 1361891432.0)) == {}
    assert lab(key("udp", "10.0.0.5", 40001, "10.0.0.6", 9999, 1361891433.0)) == {}
    assert lab(key("icmp", "10.0.0.5", 8, "10.0.0.1", 0, 1361891434.0))["service"] == "netmgmt"
    # A flow of the same 5-tuple more than a second away is another session.
    assert lab(key("tcp", "10.172.10.16", 49323, "10.156.206.202", 80, ts + 5)) == {}


def test_arkime_bad_file_names_it(tmp_path):
    bad = tmp_path / "x.test"
    bad.write_text("{not json")
    with pytest.raises(MultaError, match=r"x\.test: not JSON"):
        parse_test(bad)


# --- the built-in rules on real captures ---

@pytest.fixture(scope="module")
def ndpi_reader():
    try:
        reader_version()
    except MultaError as e:
        pytest.skip(str(e))


def labelled(shared_data, source: str, capture: str) -> list[tuple[FlowKey, dict]]:
    from multa_broker.capture import read_flows

    others = sorted(s.name for s in builtin_sources() if s.name != source)
    jobs = [j for j in plan(BuildConfig(shared_data, without=others)) if j.name == f"{source}/{capture}"]
    if not jobs:
        pytest.skip(f"{source}/{capture} not in the corpus")
    return [(f.key, jobs[0].labeller(f.key)) for f in read_flows(jobs[0].path, n=4)]


def threat_of(flows, **match):
    out = set()
    for k, labels in flows:
        if all(getattr(k, f) == v for f, v in match.items()):
            out.add(labels.get("threat"))
    return out


def test_stopddos_flood_flows_are_dos(shared_data, ndpi_reader):
    flows = labelled(shared_data, "stopddos", "amp.TCP.syn.optionallyACK.optionallysamePort.pcapng")
    assert threat_of(flows, resp_h="10.10.10.10", resp_p=21) == {"dos"}
    snmp = labelled(shared_data, "stopddos", "amp.UDP.snmp.src161.pcapng")
    assert threat_of(snmp, proto="udp", resp_p=161) == {"dos"}
    # The SNMP replies nDPI reads are netmgmt; none is called a tunnel.
    named = [lab for k, lab in snmp if lab.get("service")]
    assert named and {lab["service"] for lab in named if lab.get("threat")} <= {"netmgmt", "other"}


def test_stopddos_victims_own_ssh_session_is_not_dos(shared_data, ndpi_reader):
    flows = labelled(shared_data, "stopddos", "amp.TCP.reflection.SYNACK.pcap")
    # 172.99.233.20:22 is the victim's SSH server session (data both ways);
    # reflected SYN-ACKs *to* the victim's port 22 are flood, though.
    ssh = [lab for k, lab in flows if "172.99.233.20" in (k.orig_h, k.resp_h) and 22 in (k.orig_p, k.resp_p)]
    assert ssh and all("threat" not in lab for lab in ssh)
    assert threat_of(flows, proto="tcp", resp_p=80) == {"dos"}


def test_pcap_attack_kerbrute_is_bruteforce_and_background_unlabelled(shared_data, ndpi_reader):
    flows = labelled(shared_data, "pcap-attack", "CredAccess/CA_kerbrute_passwordspray_kerberos_AS-REQ.pcapng")
    assert threat_of(flows, resp_p=88) == {"bruteforce"}
    assert {lab.get("service") for k, lab in flows if k.resp_p == 88} == {"windows"}
    assert threat_of(flows, resp_p=49668) == {None}


def test_pcap_attack_zerologon_is_exploit(shared_data, ndpi_reader):
    flows = labelled(shared_data, "pcap-attack", "Lateral Movement/CVE-2020-1472_Zerologon_RPC_NetLogon_"
                     "NullChallenge_SecChan_6_from_nonDC_to_DC.pcapng")
    assert len(flows) > 400 and threat_of(flows) == {"exploit"}


def test_pcap_attack_dns_c2_queries_only(shared_data, ndpi_reader):
    flows = labelled(shared_data, "pcap-attack", "Command and Control/cmds over dns txt queries and reponses.pcap")
    txt = [lab for k, lab in flows if k.orig_p % 2 == 1 and k.resp_p == 53 and k.resp_h == "192.168.100.2"]
    ptr = [lab for k, lab in flows if k.orig_p % 2 == 0 and k.resp_p == 53 and k.resp_h == "192.168.100.2"]
    assert len(txt) == 49 and {lab.get("threat") for lab in txt} == {"c2"}
    assert ptr and all("threat" not in lab for lab in ptr)


def test_suricata_verify_attack_benign_and_missing_tests(shared_data, ndpi_reader):
    mirai = labelled(shared_data, "suricata-verify", "tests/bug-5437-02/input.pcap")
    assert threat_of(mirai, orig_h="41.108.52.138", resp_p=80) == {"exploit"}
    mqtt = labelled(shared_data, "suricata-verify", "tests/mqtt31-pub-qos1/input.pcap")
    assert threat_of(mqtt) == {"benign"}
    assert "iot" in {lab.get("service") for _, lab in mqtt}
    gap = labelled(shared_data, "suricata-verify", "tests/http-gap-simple/input.pcap")
    assert threat_of(gap) == {None}


def test_arkime_real_capture_gets_arkimes_service(shared_data):
    flows = labelled(shared_data, "arkime", "http-500-head.pcap")
    assert {lab.get("service") for _, lab in flows} == {"http"}


def test_suricata_verify_yaml_is_what_the_generator_writes(shared_data, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "sv.yaml"
    subprocess.run([sys.executable, str(root / "scripts" / "suricata-verify-labels.py"),
                    str(shared_data / "suricata-verify"), "--out", str(out)], check=True, capture_output=True)
    committed = root / "multa_broker" / "dataset" / "labels" / "suricata-verify.yaml"
    assert out.read_text() == committed.read_text()


def test_without_leaves_a_source_out_and_refuses_unknown_names(tmp_path):
    with pytest.raises(MultaError, match="--without nope: no such label source"):
        plan(BuildConfig(tmp_path, without=["nope"]))
    # Every built-in left out but one user source: only its captures are planned.
    (tmp_path / "caps").mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "lab" / "http-s5.pcap", tmp_path / "caps" / "a.pcap")
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("type: rules\nroot: caps\ncaptures:\n  - glob: '*'\n    rules: []\n")
    names = sorted(s.name for s in builtin_sources())
    jobs = plan(BuildConfig(tmp_path, sources=[yaml_file], without=names))
    assert [(j.name, j.source) for j in jobs] == [("caps/a.pcap", "mine")]
