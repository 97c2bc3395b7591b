"""Models with host context: inputs, learning from it, export, and classify passing it on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multa_broker import store
from multa_broker.context import CONTEXT_SPEC, N_FEATURES
from multa_broker.flow import Flow, FlowKey
from multa_broker.inference import Classifier
from multa_broker.model.classical import flow_features
from multa_broker.model.lmmoe import LMMoE, LMMoEConfig
from multa_broker.model.preprocess import CONTEXT_DIM, ContextInput
from multa_broker.model.single import SingleConfig, SingleTaskLSTM
from multa_broker.model.training import SplitTensors, TrainConfig, evaluate, fit, hide_context

torch.set_num_threads(1)
pytestmark = [pytest.mark.filterwarnings("ignore:.*torch.jit.script.*deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:DeprecationWarning")]
TASKS = {"threat": ["benign", "scan"]}


def _flows_like(b: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Identical-looking one-packet SYN flows: the packets alone cannot tell the classes apart."""
    n = 20
    sizes = torch.zeros(b, n)
    sizes[:, 0] = 60.0
    dirs = torch.zeros(b, n)
    dirs[:, 0] = 1.0
    return sizes, dirs, torch.zeros(b, n), torch.ones(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)


def _split(b: int, seed: int) -> SplitTensors:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, b)
    ctx = np.zeros((b, N_FEATURES), np.float32)
    # A scanner has many connections to many ports; a benign client a few to one.
    ctx[:, 0] = np.where(y == 1, rng.integers(50, 500, b), rng.integers(0, 5, b))
    ctx[:, 2] = np.where(y == 1, ctx[:, 0], np.minimum(ctx[:, 0], 1))
    ctx[:, 1] = 1
    inputs = (*_flows_like(b, rng), torch.from_numpy(ctx), torch.ones(b))
    return SplitTensors(inputs, torch.from_numpy(y.reshape(-1, 1)))


def test_context_features_are_zero_without_context_and_scaled_with_it() -> None:
    ci = ContextInput()
    none = ci(None, None, 3, torch.float32)
    assert none.shape == (3, CONTEXT_DIM) and float(none.abs().sum()) == 0.0
    ctx = torch.tensor([[1000.0, 10, 500, 1, 4, 2], [5000.0, 0, 0, 0, 0, 0], [7, 7, 7, 7, 7, 7]])
    out = ci(ctx, torch.tensor([1.0, 1.0, 0.0]), 3, torch.float32)
    assert out[0, 0].item() == pytest.approx(1.0)             # log scale: the cap maps to 1
    assert out[1, 0].item() == pytest.approx(1.0)             # beyond the cap: clamped
    assert out[0, N_FEATURES + 1].item() == pytest.approx(0.5)  # distinct ports / connections
    assert out[0, N_FEATURES + 3].item() == pytest.approx(0.5)  # distinct originators / endpoint conns
    assert out[0, N_FEATURES + 4].item() == pytest.approx(0.5)  # spread: max(hosts, ports) / connections
    assert out[0, -1].item() == 1.0 and out[2, -1].item() == 0.0
    assert float(out[2].abs().sum()) == 0.0                   # flagged absent: no numbers leak through


def test_a_model_with_context_learns_what_packets_cannot_show() -> None:
    train, val = _split(512, 1), _split(256, 2)
    cfg = TrainConfig(epochs=8, min_epochs=8, patience=8, batch_size=64, lr=1e-2, progress=False,
                      context_dropout=0.0)
    scores = {}
    for context in (False, True):
        torch.manual_seed(0)
        model = LMMoE(LMMoEConfig(tasks=TASKS, experts=2, hidden=8, tower=8, context=context))
        fit(model, train, val, TASKS, cfg)
        scores[context] = evaluate(model, val, TASKS)["threat"]["macro_f1"]
    assert scores[True] > 0.95
    assert scores[False] < 0.7


def test_hidden_context_is_zeroed_and_flagged() -> None:
    rows = _split(1000, 3).inputs
    out = hide_context(rows, 0.3, np.random.default_rng(0))
    hidden = out[6] == 0
    assert 0.2 < float(hidden.float().mean()) < 0.4
    assert float(out[5][hidden].abs().sum()) == 0.0
    torch.testing.assert_close(out[5][~hidden], rows[5][~hidden])


def test_classical_features_gain_the_context_columns() -> None:
    a = [x.numpy() for x in _flows_like(4, np.random.default_rng(0))]
    plain = flow_features(*a)
    ctx = np.array([[10, 2, 5, 1, 3, 3]] * 4, np.float32)
    with_ctx = flow_features(*a, ctx=ctx, has_ctx=np.ones(4))
    assert with_ctx.shape[1] == plain.shape[1] + N_FEATURES + 6
    np.testing.assert_array_equal(with_ctx[:, :plain.shape[1]], plain)
    assert with_ctx[0, plain.shape[1] + N_FEATURES + 1] == pytest.approx(0.5)


def _store(model: torch.nn.Module, dest: Path) -> Path:
    manifest = {"name": "ctx-test", "version": "1", "n": 20,
                "tasks": [{"name": t, "classes": c, "threshold": 0.0, "temperature": 1.0} for t, c in TASKS.items()]}
    return store.export(model.eval(), manifest, dest)


def test_export_records_the_context_spec_and_classify_passes_context(tmp_path: Path) -> None:
    train, val = _split(512, 1), _split(256, 2)
    torch.manual_seed(0)
    model = LMMoE(LMMoEConfig(tasks=TASKS, experts=2, hidden=8, tower=8, context=True))
    fit(model, train, val, TASKS, TrainConfig(epochs=8, min_epochs=8, batch_size=64, lr=1e-2, progress=False,
                                              context_dropout=0.0))
    clf = Classifier.load(_store(model, tmp_path / "m"))
    assert clf.manifest["context_spec"] == CONTEXT_SPEC and clf.uses_context
    key = FlowKey("tcp", "10.0.0.1", 40000, "10.0.0.2", 22, 1.0)
    scan = Flow(key, [60], [True], [0], ctx=(300, 1, 300, 0, 1, 1))
    lone = Flow(key, [60], [True], [0], ctx=(1, 1, 1, 0, 1, 1))
    got = [v.labels["threat"] for v in clf.classify([scan, lone])]
    assert got == ["scan", "benign"]


def test_a_model_without_context_keeps_its_five_argument_contract(tmp_path: Path) -> None:
    model = SingleTaskLSTM(SingleConfig(tasks=TASKS, hidden=8, tower=8))
    clf = Classifier.load(_store(model, tmp_path / "m"))
    assert "context_spec" not in clf.manifest and not clf.uses_context
    flow = Flow(FlowKey("udp", "10.0.0.1", 5353, "10.0.0.3", 53, 2.0), [70], [True], [0], ctx=(1, 1, 1, 1, 1, 1))
    assert len(clf.classify([flow])) == 1


def test_another_context_definition_is_refused(tmp_path: Path) -> None:
    import json

    dest = _store(LMMoE(LMMoEConfig(tasks=TASKS, experts=1, hidden=4, tower=4, context=True)), tmp_path / "m")
    inner = json.loads((dest / store.MANIFEST_FILE).read_text())
    inner["context_spec"] = dict(CONTEXT_SPEC, window_s=30.0)
    side = {k: v for k, v in inner.items() if k != "archive_sha256"}
    module = torch.jit.load(str(dest / store.MODEL_FILE))
    module.save(str(dest / store.MODEL_FILE), _extra_files={store.MANIFEST_FILE: json.dumps(side)})
    inner["archive_sha256"] = store.sha256_file(dest / store.MODEL_FILE)
    (dest / store.MANIFEST_FILE).write_text(json.dumps(inner))
    with pytest.raises(Exception, match="host context"):
        Classifier.load(dest)
