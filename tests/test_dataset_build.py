"""The corpus builder end to end on a few real captures, and the dataset file round trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from multa_broker.capture import read_flows
from multa_broker.cli import main
from multa_broker.dataset.build import BuildConfig, build
from multa_broker.dataset.format import FlowDataset
from multa_broker.errors import MultaError
from multa_broker.flow import encode
from multa_broker.taxonomy import MISSING, TASKS


@pytest.fixture()
def small_corpus(shared_data, tmp_path):
    """Three Zeek traces copied into a private corpus with one rules source."""
    root = tmp_path / "corpus" / "traces"
    root.mkdir(parents=True)
    for rel in ("http/get.pcap", "dns53.pcap", "http-vlan-0.pcap"):
        src = shared_data / "zeek-traces" / rel
        if not src.exists():
            pytest.skip(f"{src} missing")
        shutil.copy(src, root / rel.replace("/", "_"))
    source = tmp_path / "src.yaml"
    source.write_text(
        "type: rules\nroot: traces\ncaptures:\n"
        "  - glob: 'http*'\n    rules:\n"
        "      - match: {proto: tcp, port: 80}\n"
        "        labels: {service: http, encrypted: cleartext}\n"
        "  - glob: 'dns53.pcap'\n    rules:\n"
        "      - match: {port: 53}\n        labels: {service: dns, threat: benign}\n"
    )
    return tmp_path / "corpus", source


def test_build_labels_only_matching_flows_and_keeps_missing(small_corpus):
    data, source = small_corpus
    ds, report = build(BuildConfig(data_dir=data, sources=[source], builtin=False), progress=False)
    assert report.errors == []
    assert report.captures_read == 3
    # The data card's source of every capture: the label source's name (file stem).
    assert ds.meta["capture_sources"] == ["src"] * 3
    assert set(ds.sources().tolist()) == {"src"}
    assert 0 < len(ds) <= report.flows_seen
    service = ds.task_labels("service")
    http = TASKS["service"].index("http")
    dns = TASKS["service"].index("dns")
    assert set(service.tolist()) <= {http, dns}
    # DNS flows have no encrypted label; HTTP flows have no threat label.
    assert (ds.task_labels("encrypted")[service == dns] == MISSING).all()
    assert (ds.task_labels("threat")[service == http] == MISSING).all()
    assert (ds.task_labels("tunnel") == MISSING).all()
    # Every flow of one capture lands in one split.
    for c in set(ds.capture.tolist()):
        assert len(set(ds.split[ds.capture == c].tolist())) == 1


def test_cap_keeps_a_seeded_sample_per_capture_and_label(tmp_path):
    lab = Path(__file__).parent / "fixtures" / "lab"
    full, _ = build(BuildConfig(data_dir=tmp_path, lab_dirs=[lab], builtin=False,
                                max_per_capture_label=0), progress=False)
    capped, report = build(BuildConfig(data_dir=tmp_path, lab_dirs=[lab], builtin=False,
                                       max_per_capture_label=1), progress=False)
    assert len(capped) < len(full)
    assert report.flows_capped == len(full) - len(capped)
    # One flow per (capture, label combination), a subset of the uncapped flows.
    combos = {(int(c), tuple(l)) for c, l in zip(full.capture, full.labels.tolist())}
    assert len(capped) == len(combos)
    assert set(capped.keys.tolist()) <= set(full.keys.tolist())


def test_dataset_inputs_equal_what_classify_and_bridge_encode(small_corpus, tmp_path):
    data, source = small_corpus
    ds, _ = build(BuildConfig(data_dir=data, sources=[source], builtin=False), progress=False)
    path = tmp_path / "d.npz"
    ds.save(path)
    again = FlowDataset.load(path)
    assert again.keys.tolist() == ds.keys.tolist()
    assert again.tasks == ds.tasks and again.captures == ds.captures
    # The same capture through the serving path gives identical model inputs.
    capture = next(c for c in ds.captures if c.endswith("http_get.pcap"))
    rows = again.capture == again.captures.index(capture)
    served = {str(f.key): f for f in read_flows(data / capture, n=20)}
    flows = [served[k] for k in again.keys[rows]]
    a, b = again.subset(rows).encoded(20), encode(flows, 20)
    for name in ("sizes", "dirs", "iats", "lengths", "proto", "ctx", "has_ctx"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    # Every extracted flow has host context, stored exactly.
    assert again.has_ctx.all() and again.ctx.dtype == np.uint16 and again.ctx.shape == (len(again), 6)
    assert again.ctx[rows].tolist() == [list(f.ctx) for f in flows]
    assert again.meta["context"]["window_s"] == 60.0


def test_dataset_without_context_columns_still_loads(small_corpus, tmp_path):
    """A file written before host context existed: has_ctx False, ctx zeros, everywhere it goes."""
    data, source = small_corpus
    ds, _ = build(BuildConfig(data_dir=data, sources=[source], builtin=False), progress=False)
    assert ds.has_ctx.all()
    path = tmp_path / "new.npz"
    ds.save(path)
    with np.load(path, allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if k not in ("ctx", "has_ctx")}
    old_path = tmp_path / "old.npz"
    np.savez_compressed(old_path, **old)
    again = FlowDataset.load(old_path)
    assert len(again) == len(ds)
    assert again.ctx.shape == (len(ds), 6) and not again.ctx.any() and not again.has_ctx.any()
    e = again.split_rows("train").encoded(20)
    assert e.ctx.dtype == np.float32 and not e.ctx.any() and e.has_ctx.dtype == bool and not e.has_ctx.any()
    # Saved again, the columns are written (all False), and load back the same.
    again.save(tmp_path / "resaved.npz")
    assert not FlowDataset.load(tmp_path / "resaved.npz").has_ctx.any()


def test_dataset_with_mismatched_context_columns_is_refused(small_corpus, tmp_path):
    data, source = small_corpus
    ds, _ = build(BuildConfig(data_dir=data, sources=[source], builtin=False), progress=False)
    ds.ctx = ds.ctx[:, :5]
    ds.save(tmp_path / "bad.npz")
    with pytest.raises(MultaError, match="host-context columns"):
        FlowDataset.load(tmp_path / "bad.npz")


def test_cli_build_and_info(small_corpus, tmp_path, capsys):
    data, source = small_corpus
    out = tmp_path / "ds.npz"
    rc = main(["dataset", "build", "--data", str(data), "--no-builtin", "--source", str(source),
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "labelled flows" in text and "service:" in text
    assert main(["dataset", "info", str(out)]) == 0
    assert "http" in capsys.readouterr().out


def test_cli_build_keeps_the_splits_of_an_earlier_dataset(small_corpus, tmp_path, capsys):
    from multa_broker.dataset.format import FlowDataset

    data, source = small_corpus
    base = ["dataset", "build", "--data", str(data), "--no-builtin", "--source", str(source)]
    # Every capture in training first; the default ratios would spread them over the splits...
    assert main([*base, "--out", str(tmp_path / "a.npz"), "--ratios", "1,0,0"]) == 0
    # ... unless the first build's splits are kept.
    assert main([*base, "--out", str(tmp_path / "b.npz"), "--keep-splits", str(tmp_path / "a.npz")]) == 0
    a, b = FlowDataset.load(tmp_path / "a.npz"), FlowDataset.load(tmp_path / "b.npz")
    split_of = FlowDataset.capture_splits
    assert main([*base, "--out", str(tmp_path / "c.npz")]) == 0
    assert split_of(FlowDataset.load(tmp_path / "c.npz")) != split_of(a)
    assert split_of(a) == split_of(b)
    assert b.meta["splits_kept_from"] == "a.npz"
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "d.npz"), "--keep-splits", str(tmp_path / "nope.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.npz" in err


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["dataset", "info", str(tmp_path / "nope.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.npz" in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["dataset", "info", str(bad)]) == 1
    assert "bad.npz: not a multa dataset file" in capsys.readouterr().err
    assert main(["dataset", "build", "--data", str(tmp_path), "--ratios", "1,2"]) == 1
    assert "--ratios" in capsys.readouterr().err
