"""``multa bench tabular``: the trees against an MLP on the same features, per left-out source."""

from __future__ import annotations

import re

from multa_broker.cli import main
from multa_broker.model import loso
from multa_broker.model.synthetic import make_dataset

SOURCES = ["ndpi/pcap/a.pcap", "zeek-traces/http/b.pcap", "lab:lab/http-s1.pcap", "lab:lab/scan-syn-s1.pcap"]


def test_prints_both_models_for_every_left_out_source(tmp_path, capsys) -> None:
    ds = make_dataset(800, partial=False, seed=3)
    ds.captures = [SOURCES[i % 4].replace(".pcap", f"-{i}.pcap") for i in range(len(ds.captures))]
    path = tmp_path / "d.npz"
    ds.save(path)
    assert main(["bench", "tabular", "--dataset", str(path), "--task", "service", "--context", "off"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| service \| (\S+) \| (\d+) \| ([01]\.\d{3}) \| ([01]\.\d{3}) \|$", out, re.M)
    assert sorted(r[0] for r in rows) == loso.plan_folds(ds, None)
    (mean,) = re.findall(r"^\| service \| (\d+) \| ([01]\.\d{3}) \| ([01]\.\d{3}) \| ([+-]\d+\.\d) \|$", out, re.M)
    assert int(mean[0]) == len(rows)
    trees = sum(float(r[2]) for r in rows) / len(rows)
    assert abs(float(mean[1]) - trees) < 0.001
