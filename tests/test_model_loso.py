"""Leave-one-source-out evaluation: the left-out source never trains, and every model is scored on it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from multa_broker.dataset.format import SPLITS
from multa_broker.model import loso
from multa_broker.model.arch import Arch
from multa_broker.model.synthetic import make_dataset
from multa_broker.model.training import TrainConfig

TINY = Arch(experts=2, hidden=8, tower=8)

CAPTURE_SOURCES = ["ndpi/pcap/a.pcap", "zeek-traces/http/b.pcap", "lab:lab/scan-syn-s1.pcap",
                   "lab:lab/http-s1.pcap", "lab:lab/dns-s2.pcap", "lab:lab/openvpn-udp-s1.pcap"]


def _dataset(path):
    ds = make_dataset(600, partial=True, seed=7)
    # Six "sources" of ten synthetic captures each.
    ds.captures = [CAPTURE_SOURCES[i % 6].replace(".pcap", f"-{i}.pcap") for i in range(len(ds.captures))]
    ds.save(path)
    return ds


def test_lab_families_fold_by_kind_and_threat_families_stay_apart() -> None:
    assert loso.fold_of("lab/http") == "lab/benign"
    assert loso.fold_of("lab/dns") == "lab/benign"
    assert loso.fold_of("lab/openvpn") == "lab/tunnel"
    assert loso.fold_of("lab/scan") == "lab/scan"
    assert loso.fold_of("lab/bf") == "lab/bf"
    assert loso.fold_of("ndpi") == "ndpi"


def test_fold_split_keeps_the_left_out_source_out_of_training(tmp_path) -> None:
    ds = _dataset(tmp_path / "d.npz")
    folds = loso.folds_of(ds)
    assert set(folds) == {"ndpi", "zeek-traces", "lab/scan", "lab/benign", "lab/tunnel"}
    rest, held = loso._fold_datasets(ds, "lab/benign")
    held_keys, rest_keys = set(held.keys.tolist()), set(rest.keys.tolist())
    assert held_keys == set(ds.keys[folds == "lab/benign"].tolist())  # every row of the fold, any split
    assert not held_keys & rest_keys
    assert (held.split == SPLITS.index("test")).all()
    assert not (rest.split == SPLITS.index("test")).any()  # the others' test rows train
    others = ds.split[folds != "lab/benign"]
    assert (rest.split == SPLITS.index("val")).sum() == (others == SPLITS.index("val")).sum()
    assert len(rest) + len(held) == len(ds)


def test_run_scores_every_model_on_each_left_out_fold(tmp_path) -> None:
    _dataset(tmp_path / "d.npz")
    spec = loso.LosoSpec(dataset=tmp_path / "d.npz", out=tmp_path / "out",
                         arch=Arch(experts=2, hidden=8, tower=8, single_hidden=8), train=TrainConfig(epochs=2, min_epochs=1, batch_size=64, progress=False),
                         folds=["ndpi", "lab/scan"], variants={"old": TrainConfig(epochs=1, progress=False)})
    summary = loso.run(spec)
    assert set(summary["per_fold"]) == {"ndpi", "lab/scan"}
    assert summary["models"] == ["lmmoe", "lmmoe:old", "single", "classical"]
    for fold in ("ndpi", "lab/scan"):
        for model in summary["models"]:
            assert set(summary["per_fold"][fold][model]) == set(summary["rows"][fold])
    saved = json.loads((tmp_path / "out" / "loso.json").read_text())
    assert saved["models"] == summary["models"]
    oos = np.load(tmp_path / "out" / "oos.npz")
    y = oos["ndpi|labels|service"]
    p = oos["ndpi|lmmoe|service|probs"]
    assert p.shape == (len(y), 3) and np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert "| ndpi | service |" in (tmp_path / "out" / "loso.md").read_text()


def test_training_with_loso_calibration_ships_its_thresholds_and_reports_it(tmp_path) -> None:
    from multa_broker.model.experiment import RunSpec, run

    _dataset(tmp_path / "d.npz")
    tiny = TrainConfig(epochs=2, min_epochs=1, batch_size=64, progress=False)
    loso.run(loso.LosoSpec(dataset=tmp_path / "d.npz", out=tmp_path / "loso", arch=TINY, baselines=False,
                           train=tiny, folds=["ndpi", "lab/scan"]))
    calib = json.loads((tmp_path / "loso" / "thresholds.json").read_text())
    dest = run(RunSpec(dataset=tmp_path / "d.npz", out=tmp_path / "store", name="t", version="1", arch=TINY,
                       train=tiny, calibration=tmp_path / "loso" / "thresholds.json"))
    manifest = json.loads((dest / "manifest.json").read_text())
    for task in manifest["tasks"]:
        if task["name"] in calib["open_set"]:
            assert task["threshold"] == round(calib["open_set"][task["name"]]["threshold"], 6)
    report = (dest / "REPORT.md").read_text()
    assert "Out of source (leave one source out)" in report and "Data card" in report


def test_a_broken_calibration_file_is_one_clear_error(tmp_path) -> None:
    import pytest

    from multa_broker.errors import MultaError
    from multa_broker.model.experiment import RunSpec, run

    _dataset(tmp_path / "d.npz")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(MultaError, match="bad.json: not a thresholds.json"):
        run(RunSpec(dataset=tmp_path / "d.npz", out=tmp_path / "store", arch=TINY,
                    train=TrainConfig(epochs=1, progress=False), calibration=tmp_path / "bad.json"))


def test_finished_folds_are_kept_and_reused_by_a_rerun(tmp_path, monkeypatch) -> None:
    _dataset(tmp_path / "d.npz")
    spec = loso.LosoSpec(dataset=tmp_path / "d.npz", out=tmp_path / "out", arch=TINY,
                         baselines=False, train=TrainConfig(epochs=1, min_epochs=1, batch_size=64, progress=False),
                         folds=["ndpi"])
    first = loso.run(spec)
    assert len(list((tmp_path / "out" / "folds").glob("ndpi-*.pkl"))) == 1

    def boom(*a, **k):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(loso, "run_fold", boom)
    again = loso.run(spec)
    assert again["per_fold"] == first["per_fold"]
    # Another recipe does not reuse them; summarise-only reports what is finished and trains nothing.
    other = loso.LosoSpec(**{**spec.__dict__, "arch": dataclasses.replace(TINY, hidden=6)})
    with pytest.raises(AssertionError, match="trained again"):
        loso.run(other)
    only = loso.LosoSpec(**{**spec.__dict__, "folds": ["ndpi", "lab/scan"], "summarise_only": True})
    assert set(loso.run(only)["per_fold"]) == {"ndpi"}


def test_classical_predicts_an_empty_batch() -> None:
    from multa_broker.model.classical import fit_task

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), np.arange(60) % 2
    m = fit_task("t", ["a", "b", "c"], x, y, x, y, seed=1)
    assert m.predict_proba(np.zeros((0, 5), np.float32)).shape == (0, 3)


def test_the_recipe_key_ignores_do_nothing_options_but_not_real_ones(tmp_path) -> None:
    _dataset(tmp_path / "d.npz")
    spec = loso.LosoSpec(dataset=tmp_path / "d.npz", out=tmp_path / "out", train=TrainConfig(progress=False))
    cosine = loso.LosoSpec(**{**spec.__dict__, "train": TrainConfig(progress=False, lr_schedule="cosine")})
    assert loso.recipe_key(spec) != loso.recipe_key(cosine)
    binned = loso.LosoSpec(**{**spec.__dict__, "arch": Arch(summary_bins=8)})
    assert loso.recipe_key(spec) != loso.recipe_key(binned)
    embedded = loso.LosoSpec(**{**spec.__dict__, "arch": Arch(size_embed=8)})
    assert loso.recipe_key(spec) != loso.recipe_key(embedded)
    bagged = loso.LosoSpec(**{**spec.__dict__, "arch": Arch(size_bag=8)})
    assert loso.recipe_key(spec) != loso.recipe_key(bagged)
    for_some = loso.LosoSpec(**{**spec.__dict__, "arch": Arch(size_bag=8, size_bag_tasks=["service"])})
    assert loso.recipe_key(bagged) != loso.recipe_key(for_some)
    balanced = loso.LosoSpec(**{**spec.__dict__, "train": TrainConfig(progress=False, capture_balance=0.5)})
    assert loso.recipe_key(spec) != loso.recipe_key(balanced)
    from multa_broker.model.augment import AugmentConfig
    delayed = loso.LosoSpec(**{**spec.__dict__, "train": TrainConfig(progress=False, augment=AugmentConfig(rtt_p=0.3))})
    assert loso.recipe_key(spec) != loso.recipe_key(delayed)
    consistent = loso.LosoSpec(**{**spec.__dict__, "train": TrainConfig(progress=False, augment=AugmentConfig(),
                                                                         consistency=2.0)})
    assert loso.recipe_key(loso.LosoSpec(**{**spec.__dict__, "train": TrainConfig(
        progress=False, augment=AugmentConfig())})) != loso.recipe_key(consistent)
    # The key as it was before the option existed, and the architecture had a dataclass of its own:
    # runs made then are still found.
    import hashlib

    d = dataclasses.asdict(spec)
    d.update(d.pop("arch"))
    for k in ("folds", "jobs", "out", "summarise_only"):
        d.pop(k)
    del d["train"]["lr_schedule"]
    del d["train"]["capture_balance"]
    del d["train"]["distill_crossfit"]
    del d["train"]["distill_augmented"]
    del d["train"]["consistency"]
    del d["train"]["augment"]["rtt_p"]
    del d["train"]["augment"]["rtt_ms"]
    del d["summary_bins"]
    del d["size_embed"]
    del d["size_bag"]
    del d["size_bag_tasks"]
    d["dataset_sha256"] = loso._sha256(spec.dataset)
    old = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert loso.recipe_key(spec) == old
