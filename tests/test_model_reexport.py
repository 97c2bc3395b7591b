"""`multa train --reexport`: a stored model written again with today's code computes what it did."""

from __future__ import annotations

import json

import pytest
import torch

from multa_broker import store
from multa_broker.cli import main
from multa_broker.model.lmmoe import LMMoE, LMMoEConfig
from multa_broker.model.single import SingleConfig, SingleTaskLSTM
from multa_broker.model.speed import synthetic_inputs, take
from multa_broker.taxonomy import TASKS

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")
ALL_TASKS = {k: list(v) for k, v in TASKS.items()}


def _manifest(name: str, kind: str, tasks: dict[str, list[str]], arch: dict) -> dict:
    return {"name": name, "version": "1", "kind": kind, "n": 20, "architecture": arch,
            "training": {"command": "multa train ..."}, "metrics": {"val_mean_macro_f1": 0.5},
            "tasks": [{"name": t, "classes": c, "threshold": 0.4, "temperature": 1.5} for t, c in tasks.items()]}


@pytest.fixture
def old_store(tmp_path, monkeypatch):
    """A model and one baseline stored as an older multa did: the LMMoE scripted as trained, heads unfused."""
    monkeypatch.delattr(LMMoE, "export_form")
    torch.manual_seed(3)
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8, context=True))
    lm.temperature.fill_(1.5)
    arch = {"type": "lmmoe", "experts": 2, "hidden": 8, "tower": 8, "dropout": 0.1, "stats": True,
            "context": True, "summary_bins": 0}
    src = store.export(lm, _manifest("m", "lmmoe", ALL_TASKS, arch), tmp_path / "m" / "1")
    one = {"tunnel": ALL_TASKS["tunnel"]}
    single = SingleTaskLSTM(SingleConfig(tasks=one, hidden=8, tower=8, context=True))
    sarch = {"type": "single-lstm", "hidden": 8, "tower": 8, "dropout": 0.1, "stats": True, "context": True}
    store.export(single, _manifest("m-single-tunnel", "single-lstm", one, sarch), src / "baselines" / "single-tunnel")
    (src / "REPORT.md").write_text("# m/1: held-out test split\n\nfigures\n")
    (src / "metrics.json").write_text("{}\n")
    monkeypatch.undo()
    return src


def test_reexport_keeps_the_function_and_the_record(old_store, capsys) -> None:
    assert main(["train", "--reexport", str(old_store), "--version", "2", "--set-default"]) == 0
    new = store.load(old_store.parent / "2")
    old = store.load(old_store)
    assert old.module.original_name == "LMMoE" and new.module.original_name == "FusedLMMoE"
    x = take(synthetic_inputs(256, 20, seed=5), 100)
    for a, b in zip(old.module(*x), new.module(*x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for key in ("tasks", "architecture", "training", "metrics", "n", "kind", "context_spec"):
        assert new.manifest[key] == old.manifest[key], key
    assert new.manifest["version"] == "2" and new.manifest["reexported_from"] == "m/1"
    base = store.load(old_store.parent / "2" / "baselines" / "single-tunnel")
    assert base.manifest["reexported_from"] == "m-single-tunnel/1"
    report = (old_store.parent / "2" / "REPORT.md").read_text()
    assert report.startswith("# m/2: held-out test split\n") and "`m/1` re-exported" in report and "figures" in report
    assert json.loads((old_store.parent / "2" / "metrics.json").read_text()) == {}
    assert (old_store.parent.parent / store.DEFAULT_FILE).read_text().strip() == "m/2"


def test_reexport_refuses_what_it_cannot_do_in_one_line(old_store, capsys) -> None:
    assert main(["train", "--reexport", str(old_store), "--version", "1"]) != 0
    assert "onto itself" in capsys.readouterr().err
    assert main(["train", "--reexport", str(old_store)]) != 0
    assert "--version" in capsys.readouterr().err
    assert main(["train", "--reexport", str(old_store), "--version", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--reexport", str(old_store.parent / "2"), "--version", "3"]) != 0
    err = capsys.readouterr().err
    assert "do not fit today's LMMoE" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (old_store.parent / "3").exists()
