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


def test_trees_read_the_features_unscaled_as_multa_train_fits_them(tmp_path, monkeypatch, capsys) -> None:
    """Scaling moves the trees' split points between training values, and so their figures out of
    source: the bench's trees must be `multa train`'s, fitted on the features as they are."""
    import numpy as np

    from multa_broker.model import classical

    ds = make_dataset(400, partial=False, seed=4)
    ds.captures = [SOURCES[i % 4].replace(".pcap", f"-{i}.pcap") for i in range(len(ds.captures))]
    path = tmp_path / "d.npz"
    ds.save(path)
    seen = []
    real = classical.fit_task

    def spy(task, classes, x_train, *args, **kwargs):
        seen.append(x_train)
        return real(task, classes, x_train, *args, **kwargs)

    monkeypatch.setattr(classical, "fit_task", spy)
    assert main(["bench", "tabular", "--dataset", str(path), "--task", "service", "--context", "off"]) == 0
    capsys.readouterr()
    raw = classical.dataset_features(ds, 20)
    assert seen and all(np.isin(x, raw).all() for x in seen)
