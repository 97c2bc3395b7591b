"""The zeek label source: Zeek's conn/ssl/ssh logs mapped to labels (fixture: hand-made TSV logs),
and a real Zeek run over a small capture (skipped without a zeek binary on PATH)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from multa_broker.dataset.build import BuildConfig, build, plan
from multa_broker.dataset.labelmap import parse_source
from multa_broker.dataset.zeeklogs import ZeekLabeller, ZeekRunner, parse_conn_log, uids_in, zeek_version
from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey

LOGS = Path(__file__).parent / "fixtures" / "dataset" / "zeek"
LAB = Path(__file__).parent / "fixtures" / "lab"


def source(**extra):
    return parse_source({"type": "zeek", "root": "caps", **extra}, "zeek.yaml")


def key(proto, a, pa, b, pb, ts):
    return FlowKey(proto, a, pa, b, pb, ts)


def test_parse_conn_log_fixture():
    conns = parse_conn_log(LOGS / "conn.log")
    assert len(conns) == 11
    c = conns[3]
    assert (c.uid, c.proto, c.orig, c.resp) == ("CSmb01", "tcp", ("10.77.1.5", 49700), ("10.77.2.9", 445))
    assert c.services == ("smb", "gssapi", "ntlm")
    assert conns[6].services == ()  # "-" is unset
    assert conns[8].tunnelled and not conns[0].tunnelled
    # "ssl,-ssl" (DPD::track_removed_services_in_connection): an analyzer that failed is not the service.
    assert conns[9].services == ()
    assert conns[10].services == ("smtp", "ssl")
    assert uids_in(LOGS / "ssl.log") == {"CTls01", "CMix01", "CTls02"}
    assert uids_in(LOGS / "nope.log") == set()


def test_zeek_labels_follow_conventions():
    lab = ZeekLabeller(source(), LOGS, "x.pcap")
    assert lab(key("tcp", "10.77.1.2", 40312, "10.77.2.2", 80, 1764221000.1)) == {"service": "http"}
    assert lab(key("tcp", "10.77.1.2", 40314, "10.77.2.2", 443, 1764221001.2)) == {
        "service": "tls", "encrypted": "encrypted"}
    assert lab(key("tcp", "10.77.1.2", 40316, "10.77.2.3", 22, 1764221002.3)) == {
        "service": "ssh", "encrypted": "encrypted"}
    # smb, gssapi and ntlm all say windows.
    assert lab(key("tcp", "10.77.1.5", 49700, "10.77.2.9", 445, 1764221003.4)) == {"service": "windows"}
    # http and ssl disagree on service: missing; ssl.log has the uid: encrypted.
    assert lab(key("tcp", "10.77.1.2", 40318, "10.77.2.2", 8080, 1764221004.5)) == {"encrypted": "encrypted"}
    # SMTP with STARTTLS: Zeek logs "smtp,ssl"; the rest of the connection is TLS (nDPI: SMTPS).
    assert lab(key("tcp", "10.77.1.2", 40324, "10.77.2.2", 25, 1764221010.0)) == {
        "service": "tls", "encrypted": "encrypted"}
    assert lab(key("udp", "10.77.2.53", 53, "10.77.1.2", 53001, 1764221005.6)) == {"service": "dns"}
    assert lab(key("icmp", "10.77.1.2", 8, "10.77.2.2", 0, 1764221006.7)) == {
        "service": "netmgmt", "encrypted": "cleartext"}
    # No service, a failed analyzer, a tunnelled inner connection: nothing.
    assert lab(key("tcp", "10.77.1.2", 40320, "10.77.2.2", 9999, 1764221007.8)) == {}
    assert lab(key("tcp", "10.77.1.2", 40322, "10.77.2.2", 443, 1764221009.0)) == {}
    assert lab(key("tcp", "192.168.0.2", 40000, "192.168.0.3", 80, 1764221008.9)) == {}
    # Same 5-tuple, but not this connection's start: not joined.
    assert lab(key("tcp", "10.77.1.2", 40312, "10.77.2.2", 80, 1764221100.0)) == {}


def test_yaml_protocols_override_and_capture_rules_add():
    src = source(protocols={"http": {"service": "other"}}, defaults={"tunnel": "none"},
                 captures=[{"glob": "*", "rules": [{"match": {"resp_p": 9999}, "labels": {"threat": "scan"}}]}],
                 rules_alone=True)
    lab = ZeekLabeller(src, LOGS, "x.pcap")
    assert lab(key("tcp", "10.77.1.2", 40312, "10.77.2.2", 80, 1764221000.1)) == {"service": "other", "tunnel": "none"}
    assert lab(key("tcp", "10.77.1.2", 40320, "10.77.2.2", 9999, 1764221007.8)) == {"threat": "scan"}


def test_bad_log_names_the_file(tmp_path):
    bad = tmp_path / "conn.log"
    bad.write_text("#fields\tts\tuid\n1.0\n")
    with pytest.raises(MultaError, match=r"conn\.log:2: 1 columns, the header has 2"):
        parse_conn_log(bad)


def test_missing_zeek_is_one_clear_line(tmp_path):
    with pytest.raises(MultaError) as e:
        zeek_version("zeek-that-does-not-exist")
    assert "\n" not in str(e.value) and "install Zeek" in str(e.value)


def _zeek_or_skip() -> str:
    if shutil.which("zeek") is None:
        pytest.skip("no zeek binary on PATH (the zeek label source runs Zeek)")
    return zeek_version()


def test_real_zeek_labels_a_lab_capture(tmp_path, monkeypatch):
    _zeek_or_skip()
    monkeypatch.setenv("MULTA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "caps").mkdir()
    shutil.copy(LAB / "http-s5.pcap", tmp_path / "caps" / "http-s5.pcap")
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("name: mine\ntype: zeek\nroot: caps\n")
    ds, report = build(BuildConfig(tmp_path, sources=[yaml_file], builtin=False), progress=False)
    assert report.errors == [] and len(ds) > 0
    services = {ds.tasks["service"][i] for i in ds.task_labels("service").tolist() if i >= 0}
    assert "http" in services
    # The logs are cached per capture: a second build does not need to run Zeek again.
    cached = list((tmp_path / "cache" / "zeek").glob("*/*/conn.log"))
    assert len(cached) == 1
    assert ds.meta["capture_sources"] == ["mine"]


def test_real_zeek_checksum_setting_is_part_of_the_cache_key(tmp_path):
    _zeek_or_skip()
    a = ZeekRunner(verify_checksums=False, cache=tmp_path).cache_dir()
    b = ZeekRunner(verify_checksums=True, cache=tmp_path).cache_dir()
    assert a != b


def test_zeek_source_fails_early_without_zeek(tmp_path, monkeypatch):
    if shutil.which("zeek"):
        pytest.skip("zeek is on PATH")
    (tmp_path / "caps").mkdir()
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("type: zeek\nroot: caps\n")
    with pytest.raises(MultaError, match="zeek: not found on PATH"):
        plan(BuildConfig(tmp_path, sources=[yaml_file], builtin=False))


def test_runner_runs_zeek_in_a_temp_dir_with_the_checksum_flag_and_caches(tmp_path, monkeypatch):
    """A stand-in `zeek` on PATH records its arguments and writes the fixture logs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    fake = bindir / "zeek"
    fake.write_text(f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "zeek version 8.0.99-fake"; exit 0; fi
echo "$@" >> {calls}
cp {LOGS}/conn.log {LOGS}/ssl.log .
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    zeek_version.cache_clear()
    try:
        cap = tmp_path / "a.pcap"
        cap.write_bytes(b"not really a capture")
        runner = ZeekRunner(verify_checksums=False, cache=tmp_path / "cache")
        logs = runner.logs(cap)
        assert (logs / "conn.log").is_file() and (logs / "ssl.log").is_file() and not (logs / "ssh.log").exists()
        assert runner.logs(cap) == logs  # cached: zeek ran once
        assert calls.read_text().split() == ["-C", "-r", str(cap.resolve())]
        ZeekRunner(verify_checksums=True, cache=tmp_path / "cache").logs(cap)
        assert calls.read_text().splitlines()[1].split() == ["-r", str(cap.resolve())]
        assert logs.parent.name == "8.0.99-fake-C"
    finally:
        zeek_version.cache_clear()


def test_service_strings_real_zeek_writes():
    """Service strings Zeek 8.0.10 wrote for its own test traces (zeek-traces/)."""
    from multa_broker.dataset.zeeklogs import ZeekConn, _services, labels_for

    def labels(service, proto="tcp", uids=()):
        conn = ZeekConn("C1", proto, ("10.0.0.1", 1), ("10.0.0.2", 2), 1.0, _services(service), False)
        return labels_for(source(), conn, set(uids))

    assert _services("http,-http") == () and _services("smtp,ssl") == ("smtp", "ssl")
    # STARTTLS (tls/imap-starttls.pcap, mysql/encrypted.pcap): the TLS layer names the service.
    assert labels("imap,ssl", uids=["C1"]) == {"service": "tls", "encrypted": "encrypted"}
    assert labels("mysql,ssl", uids=["C1"]) == {"service": "tls", "encrypted": "encrypted"}
    # HTTP CONNECT (http/connect-with-header.pcap): names disagree, service missing.
    assert labels("http,ssl", uids=["C1"]) == {"encrypted": "encrypted"}
    # A tunnel's outer connection (tunnels/vxlan-encapsulated-http.pcap, tunnels/Teredo.pcap).
    assert labels("vxlan", "udp") == {"service": "other", "tunnel": "other-tunnel"}
    assert labels("teredo", "udp") == {"service": "other", "tunnel": "other-tunnel"}
    # SOCKS says nothing; what it carries does (socks-with-ssl.pcap).
    assert labels("socks") == {} and labels("socks,ssl", uids=["C1"]) == {"service": "tls", "encrypted": "encrypted"}
    assert labels("ftp,ssl,gridftp", uids=["C1"]) == {"service": "tls", "encrypted": "encrypted"}


@pytest.mark.parametrize("kind", ["gzip", "cut"])
def test_real_zeek_gets_the_packets_the_extractor_reads(tmp_path, kind):
    """Zeek cannot read a gzip'd capture ("unknown file format") and loses every log on a cut one
    ("truncated dump file"); the runner hands it a plain pcap of what the extractor reads."""
    import gzip

    _zeek_or_skip()
    raw = (LAB / "http-s5.pcap").read_bytes()
    cap = tmp_path / ("a.pcap.gz" if kind == "gzip" else "a.pcap")
    cap.write_bytes(gzip.compress(raw) if kind == "gzip" else raw[: len(raw) * 2 // 3])
    conns = parse_conn_log(ZeekRunner(cache=tmp_path / "cache").logs(cap) / "conn.log")
    assert any("http" in c.services for c in conns)
    whole = parse_conn_log(ZeekRunner(cache=tmp_path / "cache").logs(LAB / "http-s5.pcap") / "conn.log")
    if kind == "gzip":
        assert sorted((c.orig, c.resp, c.services) for c in conns) == sorted(
            (c.orig, c.resp, c.services) for c in whole)
    else:
        assert 0 < len(conns) <= len(whole)
