"""`multa tune` and `multa bench model` on a tiny synthetic dataset: outputs, Pareto logic, targets."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch

from multa_broker.bench import model as bench
from multa_broker.model import tune
from multa_broker.model.synthetic import make_dataset, train_tiny
from multa_broker.model.training import TrainConfig

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


def _point(params: int, fps: float, f1: float) -> tune.Point:
    return tune.Point(1, 8, 8, params, fps, fps, {}, f1)


def test_pareto_front() -> None:
    pts = [_point(100, 10, 0.5), _point(200, 20, 0.6), _point(300, 5, 0.4), _point(100, 10, 0.4)]
    assert tune.pareto_front(pts) == [0, 1]  # 2 is beaten by 1 on all three; 3 by 0 on F1


def test_tune_writes_table_plot_and_choice(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    make_dataset(240, partial=True, seed=0).save(data)
    cfg = TrainConfig(epochs=2, min_epochs=1, batch_size=64, lr=1e-2, progress=False)
    result = tune.run(data, tmp_path / "tune", cfg, tasks=None, n=20,
                      grid={"experts": (1, 2), "hidden": (4,), "tower": (4,)}, tolerance=1.0,
                      single_hidden=4, single_tower=4, repeats=2)
    assert len(result["points"]) == 2
    # Tolerance 1.0 makes every point feasible: the smallest one must be chosen.
    assert result["chosen"]["experts"] == 1
    rows = list(csv.DictReader(open(tmp_path / "tune" / "tune.csv")))
    assert [r["chosen"] for r in rows] == ["1", "0"]
    assert (tmp_path / "tune" / "tune.png").stat().st_size > 0
    assert "Chosen: 1 experts" in (tmp_path / "tune" / "tune.md").read_text()


def test_bench_model_reports_sizes_speed_f1_and_targets(tmp_path: Path) -> None:
    dest = train_tiny(tmp_path, epochs=1, baselines=True)
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["--model", str(dest), "--dataset", str(tmp_path / "tiny-dataset.npz"),
                         "--batches", "1,64", "--repeats", "2"])
    r = bench.measure(args)
    assert r["lmmoe"]["bytes"] == (dest / "model.pt").stat().st_size
    assert r["single"]["bytes"] == sum((dest / "baselines" / f"single-{t}" / "model.pt").stat().st_size
                                       for t in r["tasks"])
    assert set(r["flows_s"]) == {"1", "64"} and all(v["lmmoe"] > 0 and v["single"] > 0 for v in r["flows_s"].values())
    assert set(r["f1"]["service"]) == {"lmmoe", "single", "classical"}
    t = r["targets"]
    assert t["size_ratio_bytes"] == pytest.approx(r["lmmoe"]["bytes"] / r["single"]["bytes"])
    assert set(t["speedup"]) == {"64"}
    text = bench.table(r)
    assert "bytes on disk" in text and "Targets:" in text
    json.dumps(r)  # --json must serialise


def test_bench_refuses_a_model_without_baselines(tmp_path: Path) -> None:
    from multa_broker.errors import MultaError

    dest = train_tiny(tmp_path, epochs=1)
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    with pytest.raises(MultaError, match="train the model with `multa train --baselines`"):
        bench.measure(p.parse_args(["--model", str(dest), "--dataset", str(tmp_path / "x.npz")]))


def test_tune_trains_with_the_recipe_it_is_given(tmp_path: Path, monkeypatch) -> None:
    """Host context (by default where the dataset carries it) and the trees as teacher reach every
    model tune trains, single-task and LMMoE alike, as they would in `multa train`."""
    import numpy as np

    ds = make_dataset(240, partial=True, seed=0)
    ds.ctx[:] = np.random.default_rng(0).integers(0, 30, ds.ctx.shape)
    ds.has_ctx[:] = True
    data = tmp_path / "d.npz"
    ds.save(data)
    seen = []
    real_fit = tune.fit

    def spy(model, *args, teachers=None, **kwargs):
        seen.append((type(model).__name__, model.context, teachers is not None and all(teachers)))
        return real_fit(model, *args, teachers=teachers, **kwargs)

    monkeypatch.setattr(tune, "fit", spy)
    cfg = TrainConfig(epochs=1, min_epochs=1, batch_size=64, lr=1e-2, progress=False, distill=0.5)
    result = tune.run(data, tmp_path / "tune", cfg, tasks=None, n=20,
                      grid={"experts": (1,), "hidden": (4,), "tower": (4,)}, tolerance=1.0,
                      single_hidden=4, single_tower=4, repeats=1)
    assert result["context"] is True
    assert {name for name, _c, _t in seen} == {"SingleTaskLSTM", "LMMoE"}
    assert all(ctx and taught for _n, ctx, taught in seen)
    seen.clear()
    tune.run(data, tmp_path / "tune2", TrainConfig(epochs=1, min_epochs=1, batch_size=64, progress=False),
             tasks=None, n=20, grid={"experts": (1,), "hidden": (4,), "tower": (4,)}, tolerance=1.0,
             single_hidden=4, single_tower=4, repeats=1, context=False)
    assert seen and not any(ctx or taught for _n, ctx, taught in seen)
