"""Training paradigms on tiny synthetic data: losses fall, tasks are learnt, labels are masked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multa_broker.errors import MultaError
from multa_broker.model.lmmoe import LMMoE, LMMoEConfig
from multa_broker.model.synthetic import make_dataset
from multa_broker.model.training import SplitTensors, TrainConfig, capture_probs, class_weights, evaluate, fit
from multa_broker.taxonomy import MISSING

torch.set_num_threads(1)


def _splits(ds):
    tasks = ds.task_names
    return (SplitTensors.from_dataset(ds.split_rows("train"), tasks, 20),
            SplitTensors.from_dataset(ds.split_rows("val"), tasks, 20))


def _model(ds, seed=0):
    torch.manual_seed(seed)
    return LMMoE(LMMoEConfig(tasks=ds.tasks, experts=2, hidden=16, tower=16))


def test_separate_paradigm_learns_every_task_from_partly_labelled_rows() -> None:
    ds = make_dataset(500, partial=True, seed=1)
    labels = ds.labels
    assert ((labels >= 0).all(axis=1)).sum() == 0  # no row carries every label: joint is impossible
    train, val = _splits(ds)
    m = _model(ds)
    r = fit(m, train, val, ds.tasks, TrainConfig(paradigm="separate", epochs=20, patience=20, batch_size=64,
                                                  lr=1e-2, progress=False))
    losses = [h["loss"] for h in r.history]
    assert losses[-1] < 0.6 * losses[0]
    assert r.val["service"]["macro_f1"] > 0.9
    assert r.val["encrypted"]["macro_f1"] > 0.9
    assert r.val["threat"]["macro_f1"] > 0.6  # learnt from the 30% of rows that carry it


def test_joint_paradigm_learns_fully_labelled_rows() -> None:
    ds = make_dataset(400, partial=False, seed=2)
    train, val = _splits(ds)
    m = _model(ds)
    r = fit(m, train, val, ds.tasks, TrainConfig(paradigm="joint", epochs=12, patience=12, batch_size=64,
                                                  lr=1e-2, progress=False))
    assert r.history[-1]["loss"] < 0.6 * r.history[0]["loss"]
    assert r.best_score > 0.85


def test_joint_refuses_when_no_row_has_every_label() -> None:
    ds = make_dataset(200, partial=True, seed=3)
    train, val = _splits(ds)
    with pytest.raises(MultaError, match="joint training needs rows labelled for every task"):
        fit(_model(ds), train, val, ds.tasks, TrainConfig(paradigm="joint", epochs=1, progress=False))


def test_missing_labels_never_reach_the_loss() -> None:
    """A task whose labels are all missing trains nothing: its tower keeps its initial weights."""
    ds = make_dataset(200, partial=False, seed=4)
    ds.labels[:, 2] = MISSING
    ds.labels[ds.split != 0, 2] = 0  # validation rows keep a label so early stopping has a score
    train, val = _splits(ds)
    m = _model(ds)
    before = {k: v.clone() for k, v in m.heads[2].state_dict().items()}
    with pytest.raises(MultaError, match="no labelled training rows"):
        fit(m, train, val, ds.tasks, TrainConfig(paradigm="separate", epochs=1, progress=False))
    ds.labels[ds.split == 0, 2] = np.where(np.arange((ds.split == 0).sum()) == 0, 0, MISSING)
    train, val = _splits(ds)
    torch.manual_seed(0)
    fit(m, train, val, ds.tasks, TrainConfig(paradigm="separate", epochs=1, progress=False, batch_size=32))
    after = m.heads[2].state_dict()
    # Only the batches that contained the one labelled row may move the threat head.
    moved = sum(not torch.equal(before[k], after[k]) for k in before)
    assert moved > 0
    ds.labels[ds.split == 0, 2] = MISSING


def test_class_weights() -> None:
    y = np.array([0] * 90 + [1] * 10 + [MISSING] * 5)
    w = class_weights(y, 3, "sqrt").numpy()
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])
    assert (w[0] * 90 + w[1] * 10) / 100 == pytest.approx(1.0)
    assert class_weights(y, 3, "none").tolist() == [1, 1, 1]
    assert class_weights(y, 3, "inverse")[1] == pytest.approx(9 * class_weights(y, 3, "inverse")[0])


def test_evaluate_reports_only_labelled_rows() -> None:
    ds = make_dataset(120, partial=True, seed=5)
    train, _ = _splits(ds)
    m = _model(ds)
    rep = evaluate(m, train, ds.tasks)
    for t, task in enumerate(ds.task_names):
        assert rep[task]["rows"] == int((train.labels[:, t] >= 0).sum())


def test_distillation_follows_the_teacher_on_the_rows_it_trains() -> None:
    """With all the weight on soft labels, a teacher that always says class 0 is what the model learns."""
    ds = make_dataset(400, partial=False, seed=5)
    train, val = _splits(ds)

    class Always0:
        def predict_proba(self, feats):
            p = np.zeros((len(feats), 3))
            p[:, 0] = 1.0
            return p

    m = _model(ds)
    teachers = [Always0(), None, None]
    fit(m, train, val, ds.tasks, TrainConfig(epochs=6, min_epochs=6, batch_size=64, lr=1e-2, progress=False,
                                             distill=1.0), teachers=teachers)
    from multa_broker.model.training import predict_logits

    pred = predict_logits(m, val.inputs)[0].argmax(axis=1)
    assert (pred == 0).mean() > 0.95          # the teacher, not the labels (a third of rows are class 0)
    m2 = _model(ds)
    fit(m2, train, val, ds.tasks, TrainConfig(epochs=6, min_epochs=6, batch_size=64, lr=1e-2, progress=False,
                                              distill=0.0), teachers=teachers)
    assert (predict_logits(m2, val.inputs)[0].argmax(axis=1) == 0).mean() < 0.6   # weight 0: labels only


def test_weight_average_follows_the_steps_and_swaps_in_and_out() -> None:
    from multa_broker.model.training import WeightAverage

    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
        lin.bias.fill_(0.0)
    avg = WeightAverage(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.fill_(4.0)
    avg.update(lin)                       # 0.5 * 0 + 0.5 * 4
    with torch.no_grad():
        lin.weight.fill_(8.0)
    avg.update(lin)                       # 0.5 * 2 + 0.5 * 8
    raw = avg.swap(lin)
    assert torch.allclose(lin.weight, torch.full_like(lin.weight, 5.0))
    assert torch.allclose(raw["weight"], torch.full_like(lin.weight, 8.0))
    lin.load_state_dict(raw)
    assert torch.allclose(lin.weight, torch.full_like(lin.weight, 8.0))


def test_training_with_a_weight_average_learns_and_keeps_the_average() -> None:
    ds = make_dataset(400, seed=2)
    train, val = _splits(ds)
    m = _model(ds)
    r = fit(m, train, val, ds.tasks, TrainConfig(epochs=6, patience=6, min_epochs=6, batch_size=64, lr=1e-2,
                                                  progress=False, ema=0.9))
    assert r.val["service"]["macro_f1"] > 0.8
    # The stored weights are the ones validated: evaluating them again gives the same score.
    again = evaluate(m, val, ds.tasks)
    assert again["service"]["macro_f1"] == pytest.approx(r.val["service"]["macro_f1"])


def test_cosine_schedule_anneals_to_a_hundredth_and_still_learns() -> None:
    ds = make_dataset(400, seed=2)
    train, val = _splits(ds)
    cfg = TrainConfig(epochs=6, patience=6, min_epochs=6, batch_size=64, lr=1e-2, progress=False,
                      lr_schedule="cosine")
    r = fit(_model(ds), train, val, ds.tasks, cfg)
    rates = [h["lr"] for h in r.history]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[0] < 1e-2
    assert rates[-1] == pytest.approx(1e-4)
    assert r.val["service"]["macro_f1"] > 0.8
    flat = fit(_model(ds), train, val, ds.tasks, TrainConfig(epochs=2, patience=2, min_epochs=2, batch_size=64,
                                                             lr=1e-2, progress=False))
    assert [h["lr"] for h in flat.history] == [1e-2, 1e-2]


def test_an_unknown_schedule_is_refused() -> None:
    ds = make_dataset(100, seed=2)
    train, val = _splits(ds)
    with pytest.raises(MultaError, match="unknown learning-rate schedule 'step'"):
        fit(_model(ds), train, val, ds.tasks, TrainConfig(epochs=1, progress=False, lr_schedule="step"))


def test_a_step_cap_applies_to_each_task_stream(monkeypatch) -> None:
    ds = make_dataset(400, partial=True, seed=1)
    train, val = _splits(ds)
    steps = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: steps.append(1) or real(*a, **k))
    fit(_model(ds), train, val, ds.tasks, TrainConfig(epochs=1, min_epochs=1, batch_size=16, max_steps=3,
                                                      progress=False))
    # Separate paradigm, one stream per task: each task gets its 3 batches, as its baseline would.
    assert len(steps) == 3 * len(ds.tasks)


def test_capture_balance_gives_small_captures_their_share() -> None:
    capture = np.array([0] * 90 + list(range(1, 11)))
    rows = np.arange(100)
    assert capture_probs(capture, rows, 0.0) is None
    flat = capture_probs(capture, rows, 1.0)
    assert flat.sum() == pytest.approx(1.0)
    assert flat[:90].sum() == pytest.approx(1 / 11)  # the big capture counts as one of eleven
    half = capture_probs(capture, rows, 0.5)
    assert half[:90].sum() == pytest.approx(90 ** 0.5 / (90 ** 0.5 + 10))


def test_class_weights_follow_the_drawn_mix_under_capture_balance() -> None:
    # Class 0 fills one capture of 90 rows, class 1 ten captures of one row: drawn alike per
    # capture, class 1 makes 10/11 of the batches, so it is the one to weigh down.
    y = np.array([0] * 90 + [1] * 10)
    p = capture_probs(np.array([0] * 90 + list(range(1, 11))), np.arange(100), 1.0)
    w = class_weights(y, 2, "sqrt", p).numpy()
    assert w[0] == pytest.approx(w[1] * (10 / 1) ** 0.5)
    assert class_weights(y, 2, "sqrt").numpy()[1] > class_weights(y, 2, "sqrt").numpy()[0]


def test_fit_draws_rows_by_capture_when_balanced(monkeypatch) -> None:
    ds = make_dataset(400, partial=False, seed=2)
    train, val = _splits(ds)
    big = np.zeros(len(train), dtype=np.int64)  # one capture holds nine tenths of the rows,
    big[:len(train) // 10] = np.arange(1, len(train) // 10 + 1)  # the rest are one capture each
    small_rows = set(range(len(train) // 10))

    def share_of_small(balance: float) -> float:
        seen: list[int] = []
        t = SplitTensors(train.inputs, train.labels, big)
        real = t.rows
        monkeypatch.setattr(t, "rows", lambda idx: seen.extend(idx.tolist()) or real(idx))
        fit(_model(ds), t, val, ds.tasks, TrainConfig(paradigm="joint", epochs=3, min_epochs=1, batch_size=32,
                                                      capture_balance=balance, progress=False))
        return sum(r in small_rows for r in seen) / len(seen)

    assert share_of_small(0.0) == pytest.approx(0.1, abs=0.01)  # one pass: every row once
    # Balanced, the big capture is one capture among many: the single-row captures fill most batches.
    assert share_of_small(1.0) > 0.9


def test_a_negative_capture_balance_is_refused() -> None:
    ds = make_dataset(60, seed=1)
    train, val = _splits(ds)
    with pytest.raises(MultaError, match="capture balance"):
        fit(_model(ds), train, val, ds.tasks, TrainConfig(epochs=1, capture_balance=-1, progress=False))


def test_crossfit_scores_each_capture_with_trees_that_never_saw_it() -> None:
    from multa_broker.model.classical import crossfit_proba, fit_task

    # Each capture has its own value of the one feature, and the label alternates from capture to
    # capture: trees can memorise a capture, but a capture they have not seen looks like its
    # neighbours, which carry the other label.
    capture = np.repeat(np.arange(40), 25)  # trees keep at least 20 rows a leaf
    x = capture.astype(np.float32)[:, None]
    y = capture % 2
    m = fit_task("t", ["even", "odd"], x, y, x, y, seed=1)
    own = m.predict_proba(x)
    assert own[np.arange(len(y)), y].mean() > 0.9
    oof = crossfit_proba(m, x, y, capture, folds=4, seed=1)
    assert oof.shape == own.shape and np.allclose(oof.sum(axis=1), 1.0)
    assert oof[np.arange(len(y)), y].mean() < 0.5  # out of fold, no capture is recognised


def _service_teacher():
    """A synthetic dataset's splits, the trees' features of its training rows, which of them carry
    a service label, and a service teacher (no teacher for the other tasks)."""
    from multa_broker.model.classical import fit_task
    from multa_broker.model.training import _teacher_features

    ds = make_dataset(300, partial=True, seed=7)
    train, val = _splits(ds)
    feats, _ = _teacher_features([None], train.inputs)
    y = train.labels.numpy()[:, 0]
    ok = y >= 0
    teacher = fit_task("service", ds.tasks[ds.task_names[0]], feats[ok], y[ok], feats[ok], y[ok], seed=1)
    return ds, train, val, feats, ok, teacher


def test_distillation_with_crossfit_trains_and_one_fold_is_refused() -> None:
    from multa_broker.model.training import crossfit_teacher_probs, teacher_probs

    ds, train, val, _, ok, teacher = _service_teacher()
    teachers = [teacher] + [None] * (len(ds.tasks) - 1)
    crossed = crossfit_teacher_probs(teachers, train, 3, 1, "sqrt")
    plain = teacher_probs(teachers, train.inputs)
    assert crossed[1] is None and crossed[0].shape == plain[0].shape
    assert torch.equal(crossed[0][~torch.from_numpy(ok)], plain[0][~torch.from_numpy(ok)])  # unlabelled: as is
    assert not torch.allclose(crossed[0][torch.from_numpy(ok)], plain[0][torch.from_numpy(ok)])
    fit(_model(ds), train, val, ds.tasks, TrainConfig(epochs=2, min_epochs=1, distill=0.5, distill_crossfit=3,
                                                      progress=False), teachers=teachers)
    with pytest.raises(MultaError, match="at least 2 folds"):
        fit(_model(ds), train, val, ds.tasks, TrainConfig(epochs=1, distill=0.5, distill_crossfit=1,
                                                          progress=False), teachers=teachers)


def test_distillation_on_augmented_batches_asks_the_teacher_about_what_the_student_sees() -> None:
    from multa_broker.model.augment import AugmentConfig

    ds, train, val, feats, _, teacher = _service_teacher()
    asked: list[np.ndarray] = []
    real = teacher.predict_proba
    teacher.predict_proba = lambda x: asked.append(x.copy()) or real(x)  # type: ignore[method-assign]
    teachers = [teacher] + [None] * (len(ds.tasks) - 1)
    cfg = TrainConfig(epochs=2, min_epochs=1, batch_size=32, distill=0.5, distill_augmented=True,
                      augment=AugmentConfig(), progress=False)
    fit(_model(ds), train, val, ds.tasks, cfg, teachers=teachers)
    # Batch by batch (never the whole split at once), and only batches that carry service labels.
    assert asked and all(len(a) <= 32 for a in asked)
    assert len(asked) < 2 * sum(-(-int((train.labels[:, t] >= 0).sum()) // 32) for t in range(len(ds.tasks)))
    captured = {r.tobytes() for r in feats}
    asked_rows = np.concatenate(asked)
    assert sum(r.tobytes() not in captured for r in asked_rows) > len(asked_rows) // 4
    with pytest.raises(MultaError, match="exclude each other"):
        TrainConfig(distill=0.5, distill_augmented=True, distill_crossfit=3)


@pytest.mark.parametrize("flag, value, message", [("--capture-balance", "-0.5", "must be >= 0"),
                                                  ("--distill-crossfit", "1", "at least 2 folds"),
                                                  # A misspelt task was once weighted silently by nothing.
                                                  ("--task-weights", "servce=2", "'servce=2'"),
                                                  ("--task-weights", "threat", "'threat'"),
                                                  ("--task-weights", "threat=-1", "'-1'"),
                                                  ("--task-weights", "threat=nan", "'nan'"),
                                                  ("--consistency", "-1", "finite number >= 0"),
                                                  ("--consistency", "nan", "finite number >= 0")])
def test_train_refuses_bad_options_before_training(tmp_path, capsys, flag, value, message) -> None:
    from multa_broker.cli import main

    # The dataset does not exist: the option is refused before anything is read or trained.
    rc = main(["train", "--dataset", str(tmp_path / "none.npz"), "--out", str(tmp_path), flag, value])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_task_weights_name_tasks_of_the_taxonomy() -> None:
    from multa_broker.commands.train import parse_task_weights

    assert parse_task_weights("") == {}
    assert parse_task_weights("service=1, threat=2.5") == {"service": 1.0, "threat": 2.5}


def test_js_divergence_is_zero_for_the_same_answer_and_bounded() -> None:
    from multa_broker.model.training import js_divergence

    a = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert float(js_divergence(a, a)) == pytest.approx(0.0, abs=1e-6)
    b = torch.tensor([[-9.0, 9.0, 0.0], [9.0, -9.0, -9.0]])
    d = float(js_divergence(a, b))
    assert d == pytest.approx(float(js_divergence(b, a)), abs=1e-6)
    assert 0.1 < d <= float(np.log(2)) + 1e-6
    # Opposite certainties: the bound, ln 2.
    sure = torch.tensor([[50.0, -50.0]])
    assert float(js_divergence(sure, -sure)) == pytest.approx(float(np.log(2)), abs=1e-4)


def test_consistency_trains_on_two_views_and_scores_their_divergence_per_task(monkeypatch) -> None:
    from multa_broker.model import training
    from multa_broker.model.augment import AugmentConfig

    ds = make_dataset(300, partial=True, seed=4)
    train, val = _splits(ds)
    seen, calls = [], []
    real_views, real_js = training._views, training.js_divergence

    def views(tr, idx, rng, cfg, context, n):
        rows = real_views(tr, idx, rng, cfg, context, n)
        seen.append((len(idx), rows))
        return rows

    def js(a, b):
        calls.append(a.shape[0])
        return real_js(a, b)

    monkeypatch.setattr(training, "_views", views)
    monkeypatch.setattr(training, "js_divergence", js)
    cfg = TrainConfig(epochs=6, patience=6, min_epochs=1, batch_size=32, lr=1e-2, progress=False,
                      augment=AugmentConfig(), consistency=2.0)
    r = fit(_model(ds), train, val, ds.tasks, cfg)
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.val["service"]["macro_f1"] > 0.8
    # Each step: the batch twice, augmented independently; one term per task on the whole batch.
    b, rows = seen[0]
    assert rows[0].shape[0] == 2 * b and not torch.equal(rows[2][:b], rows[2][b:])
    assert len(calls) == len(seen) * len(ds.tasks) and set(calls) <= {i for i, _ in seen}
    with pytest.raises(MultaError, match="needs augmentation"):
        TrainConfig(consistency=1.0)
