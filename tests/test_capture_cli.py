"""``multa flows``: JSON lines on stdout, one-line errors on stderr, non-zero exit on any failure."""

from __future__ import annotations

import json

import pytest

from multa_broker.capture import pcapwriter as pw
from multa_broker.cli import main
from multa_broker.errors import MultaError
from multa_broker.flow import Flow

C, S = "10.0.0.1", "10.0.0.2"


def _capture(tmp_path):
    frames = [(1.0, pw.ether(pw.ip(pw.icmp(C, S, 8)))), (1.5, pw.ether(pw.ip(pw.icmp(S, C, 0)))),
              (2.0, pw.ether(pw.ip(pw.udp(C, 5000, S, 6000, b"hi"))))]
    p = tmp_path / "c.pcap"
    p.write_bytes(pw.pcap(frames))
    return p


def test_flows_prints_json_lines(tmp_path, capsys):
    assert main(["flows", str(_capture(tmp_path))]) == 0
    lines = capsys.readouterr().out.splitlines()
    flows = [Flow.from_json(json.loads(line)) for line in lines]
    assert [(f.key.proto, f.sizes, f.dirs, f.iats) for f in flows] == [
        ("icmp", [28, 28], [True, False], [0, 500000]), ("udp", [30], [True], [0])]


def test_flows_options(tmp_path, capsys):
    p = _capture(tmp_path)
    assert main(["flows", "--n", "1", "--min-packets", "2", "--counts", str(p)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    obj = json.loads(line)
    assert obj["sizes"] == [28] and obj["orig_pkts"] == 1 and obj["resp_pkts"] == 1


def test_flows_bad_inputs_one_line_each_others_still_processed(tmp_path, capsys):
    good = _capture(tmp_path)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture")
    rc = main(["flows", str(bad), str(tmp_path / "missing.pcap"), str(good)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert len(out.splitlines()) == 2
    errs = err.splitlines()
    assert any("bad.pcap" in e for e in errs) and any("missing.pcap" in e for e in errs)
    assert "Traceback" not in err


def test_flows_rejects_bad_n(tmp_path, capsys):
    assert main(["flows", "--n", "0", str(_capture(tmp_path))]) == 1
    assert "--n must be" in capsys.readouterr().err


def test_bench_flows_json_on_small_corpus(tmp_path, capsys):
    import argparse

    from multa_broker.bench import flows as bench

    _capture(tmp_path)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args([str(tmp_path), "--repeat", "1", "--json"])) == 0
    out = json.loads(capsys.readouterr().out)
    plain, verify = out["results"]["plain"], out["results"]["verify"]
    assert plain["packets"] == 3 and plain["flows"] == 2 and verify["flows"] == 2
    assert plain["median_pkts_per_s"] > 0


def test_bench_flows_default_captures_come_from_multa_data(tmp_path, monkeypatch):
    from multa_broker.bench import flows as bench

    monkeypatch.delenv("MULTA_DATA", raising=False)
    with pytest.raises(MultaError, match="MULTA_DATA"):
        bench.resolve_paths([])
    (tmp_path / "ndpi" / "pcap").mkdir(parents=True)
    cap = _capture(tmp_path / "ndpi" / "pcap")
    monkeypatch.setenv("MULTA_DATA", str(tmp_path))
    assert bench.resolve_paths([]) == [cap]


def test_dataset_build_without_a_corpus_says_how_to_name_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MULTA_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "build", "--out", str(tmp_path / "d.npz")]) == 1
    err = capsys.readouterr().err
    assert "--data" in err and "MULTA_DATA" in err
