"""The data card (multa_broker.dataset.card) and per-flow sources on a small synthetic dataset."""

from __future__ import annotations

import json

import numpy as np

from multa_broker.cli import main
from multa_broker.dataset.build import CaptureJob, source_id
from multa_broker.dataset.card import data_card, render_markdown
from multa_broker.dataset.format import FlowDataset, lab_source, source_of_capture
from multa_broker.taxonomy import MISSING, TASKS


def synthetic(with_sources: bool = True) -> FlowDataset:
    """Four captures from three sources; threat/dos has 300 train flows from 3 sources, scan too few."""
    captures = ["stopddos/a.pcap", "ndpi/pcap/b.pcap", "lab:lab/scan-syn-s1.pcap", "lab:lab/http-s2.pcap"]
    # (capture, split, threat, service, flows)
    groups = [(0, 0, "dos", None, 100), (1, 0, "dos", "dns", 100), (2, 0, "dos", None, 100),
              (2, 0, "scan", None, 50), (3, 1, "benign", "http", 20)]
    rows = []
    for cap, split, threat, service, n in groups:
        rows += [(cap, split, threat, service)] * n
    f = len(rows)
    labels = np.full((f, len(TASKS)), MISSING, np.int16)
    t_threat, t_service = list(TASKS).index("threat"), list(TASKS).index("service")
    for i, (_, _, threat, service) in enumerate(rows):
        labels[i, t_threat] = TASKS["threat"].index(threat)
        if service:
            labels[i, t_service] = TASKS["service"].index(service)
    z = np.zeros
    meta = {}
    if with_sources:
        meta = {"capture_sources": ["stopddos", "ndpi", "lab/scan", "lab/http"],
                "source_info": {"stopddos": {"origin": "StopDDoS", "licence": "free | use"},
                                "ndpi": {"origin": "ntop/nDPI", "licence": "LGPL-3.0"}}}
    return FlowDataset(
        sizes=z((f, 4), np.float32), dirs=z((f, 4), np.float32), iats=z((f, 4), np.float32),
        lengths=np.ones(f, np.int64), proto=z(f, np.int64), orig_p=z(f, np.int32), resp_p=z(f, np.int32),
        labels=labels, split=np.array([r[1] for r in rows], np.int8),
        capture=np.array([r[0] for r in rows], np.int32), keys=np.array([str(i) for i in range(f)]),
        tasks={t: list(c) for t, c in TASKS.items()}, captures=captures, meta=meta)


def test_sources_per_flow_and_lab_families():
    ds = synthetic()
    src = ds.sources()
    assert src.shape == (len(ds),)
    assert list(np.unique(src)) == ["lab/http", "lab/scan", "ndpi", "stopddos"]
    assert lab_source("openvpn-udp-s1.pcap") == "lab/openvpn"
    assert lab_source("bf-ssh-s1.pcap") == "lab/bf"
    job = CaptureJob(path=None, name="lab:lab/scan-syn-s2.pcap", source="lab", labeller=lambda k: {})
    assert source_id(job) == "lab/scan"
    assert source_id(CaptureJob(None, "stopddos/x.pcap", "stopddos", lambda k: {})) == "stopddos"


def test_older_files_without_capture_sources_still_load(tmp_path):
    ds = synthetic(with_sources=False)
    path = tmp_path / "old.npz"
    ds.save(path)
    back = FlowDataset.load(path)
    assert "capture_sources" not in back.meta
    assert list(np.unique(back.sources())) == ["lab/http", "lab/scan", "ndpi", "stopddos"]
    assert source_of_capture("zeek-traces/http/get.pcap") == "zeek-traces"
    # Origin and licence of a built-in source come from its YAML when the file lacks them.
    by = {s["source"]: s for s in data_card(back)["sources"]}
    assert by["ndpi"]["licence"] == "LGPL-3.0" and by["lab/scan"]["origin"] == "multa traffic lab, generated"
    # subset keeps the mapping
    assert set(back.subset(back.capture == 1).sources().tolist()) == {"ndpi"}


def test_card_counts_train_flows_and_sources_and_flags_under_target():
    card = data_card(synthetic())
    dos = card["tasks"]["threat"]["dos"]
    assert dos == {"flows": 300, "train_flows": 300, "sources": 3, "meets_target": True,
                   "train_flows_by_source": {"lab/scan": 100, "ndpi": 100, "stopddos": 100}}
    scan = card["tasks"]["threat"]["scan"]
    assert (scan["train_flows"], scan["sources"], scan["meets_target"]) == (50, 1, False)
    # benign flows are all in validation: none train, so under target.
    assert card["tasks"]["threat"]["benign"]["train_flows"] == 0
    assert "threat/scan" in card["under_target"] and "threat/dos" not in card["under_target"]
    by = {s["source"]: s for s in card["sources"]}
    assert by["stopddos"]["origin"] == "StopDDoS" and by["lab/http"]["origin"] == "multa traffic lab, generated"
    assert by["ndpi"]["classes"]["service"] == {"dns": 100}
    assert by["lab/scan"]["captures"] == 1 and by["lab/scan"]["flows"] == 150
    json.dumps(card)  # JSON-ready for manifests


def test_markdown_card_has_every_class_and_escapes_pipes():
    text = render_markdown(data_card(synthetic()))
    assert "| dos | 300 | 3 | 300 | ok |" in text
    assert "| scan | 50 | 1 | 50 | **under** |" in text
    assert "free \\| use" in text
    for task, classes in TASKS.items():
        assert f"**{task}**" in text
        for c in classes:
            assert f"| {c} |" in text


def test_info_command_prints_card_and_json(tmp_path, capsys):
    path = tmp_path / "d.npz"
    synthetic().save(path)
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| stopddos | StopDDoS |" in out and "Class counts per split" in out
    assert main(["dataset", "info", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["card"]["tasks"]["threat"]["dos"]["sources"] == 3 and "counts" in doc
