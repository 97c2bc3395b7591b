"""The model store: export round trip, manifest contents, and refusal of anything tampered with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from multa_broker import store
from multa_broker.errors import MultaError
from multa_broker.flow import FEATURE_SPEC
from multa_broker.model.lmmoe import LMMoE, LMMoEConfig
from multa_broker.model.synthetic import SMALL_TASKS, train_tiny

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[LMMoE, Path]:
    torch.manual_seed(0)
    model = LMMoE(LMMoEConfig(tasks=SMALL_TASKS, experts=2, hidden=8, tower=8)).eval()
    with torch.no_grad():
        model.temperature.copy_(torch.tensor([1.5, 0.8, 1.0]))
    manifest = {"name": "t", "version": "1", "n": 20,
                "tasks": [{"name": k, "classes": v, "threshold": 0.5} for k, v in SMALL_TASKS.items()]}
    dest = store.export(model, manifest, tmp_path_factory.mktemp("store") / "t" / "1")
    return model, dest


@pytest.fixture
def copy(exported: tuple[LMMoE, Path], tmp_path: Path) -> Path:
    dest = tmp_path / "t" / "1"
    shutil.copytree(exported[1], dest)
    return dest


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(7, 20, generator=g) * 1400 + 40, torch.randint(0, 2, (7, 20), generator=g).float(),
            torch.rand(7, 20, generator=g) * 1e5, torch.randint(1, 21, (7,), generator=g),
            torch.randint(0, 3, (7,), generator=g))


def test_round_trip_gives_the_eager_outputs(exported: tuple[LMMoE, Path]) -> None:
    model, dest = exported
    loaded = store.load(dest)
    x = _inputs()
    for a, b in zip(model(*x), loaded.module(*x)):
        torch.testing.assert_close(a, b)
    assert loaded.ident == "t/1"
    assert store.load(dest / "model.pt").ident == "t/1"  # a model.pt path with its manifest beside it


def test_manifest_beside_and_inside_agree(exported: tuple[LMMoE, Path]) -> None:
    _, dest = exported
    side = json.loads((dest / "manifest.json").read_text())
    extra = {"manifest.json": ""}
    torch.jit.load(str(dest / "model.pt"), _extra_files=extra)
    inner = json.loads(extra["manifest.json"])
    assert side.pop("archive_sha256") == store.sha256_file(dest / "model.pt")
    assert side == inner
    assert inner["feature_spec"] == FEATURE_SPEC
    assert len(inner["weights_sha256"]) == 64


def test_changed_model_bytes_are_refused(copy: Path) -> None:
    data = bytearray((copy / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(MultaError, match="does not match its manifest"):
        store.load(copy)


def test_changed_weights_with_a_fixed_up_archive_hash_are_refused(copy: Path, exported) -> None:
    """Someone swaps the weights and updates archive_sha256: the weights hash still catches it."""
    module = torch.jit.load(str(copy / "model.pt"))
    extra = {"manifest.json": ""}
    torch.jit.load(str(copy / "model.pt"), _extra_files=extra)
    with torch.no_grad():
        next(iter(module.parameters())).add_(0.01)
    module.save(str(copy / "model.pt"), _extra_files=extra)
    side = json.loads((copy / "manifest.json").read_text())
    side["archive_sha256"] = store.sha256_file(copy / "model.pt")
    (copy / "manifest.json").write_text(json.dumps(side))
    with pytest.raises(MultaError, match="weights do not match"):
        store.load(copy)


def test_changed_manifest_is_refused(copy: Path) -> None:
    side = json.loads((copy / "manifest.json").read_text())
    side["tasks"][0]["threshold"] = 0.01
    (copy / "manifest.json").write_text(json.dumps(side))
    with pytest.raises(MultaError, match=r"differs from the manifest inside model.pt \(fields: tasks\)"):
        store.load(copy)


def test_missing_manifest_is_refused(copy: Path) -> None:
    (copy / "manifest.json").unlink()
    with pytest.raises(MultaError, match="manifest.json: missing"):
        store.load(copy)


def test_garbage_archive_is_refused_without_traceback(copy: Path) -> None:
    (copy / "model.pt").write_bytes(b"not a zip")
    with pytest.raises(MultaError, match="does not match"):
        store.load(copy)
    with pytest.raises(MultaError, match="not a loadable TorchScript archive"):
        store.load(copy, verify=False)


def test_other_feature_spec_is_refused(exported: tuple[LMMoE, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model, dest = exported
    manifest = json.loads((dest / "manifest.json").read_text())
    other = dict(FEATURE_SPEC, version=FEATURE_SPEC["version"] + 1, iat="milliseconds")
    monkeypatch.setattr(store, "FEATURE_SPEC", other)
    store.export(model, manifest, tmp_path / "old")
    monkeypatch.setattr(store, "FEATURE_SPEC", FEATURE_SPEC)
    with pytest.raises(MultaError, match="feature spec version 2 .* this multa uses version 1"):
        store.load(tmp_path / "old")


def test_default_resolves_through_the_store_pointer(exported, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, dest = exported
    monkeypatch.setenv("MULTA_MODEL_STORE", str(dest.parent.parent))
    store.set_default(dest.parent.parent, "t", "1")
    assert store.load("default").ident == "t/1"
    monkeypatch.setenv("MULTA_MODEL_STORE", str(tmp_path))
    with pytest.raises(MultaError, match="no default model"):
        store.load("default")
    with pytest.raises(MultaError, match="no such model"):
        store.load(tmp_path / "nope")


def test_training_run_writes_a_complete_store_entry(tmp_path: Path) -> None:
    dest = train_tiny(tmp_path, epochs=2, baselines=True)
    loaded = store.load(dest)
    m = loaded.manifest
    assert [t["name"] for t in m["tasks"]] == list(SMALL_TASKS)
    assert m["training"]["paradigm"] == "separate" and m["training"]["seed"] == 0
    assert m["training"]["dataset"]["sha256"] == store.sha256_file(tmp_path / "tiny-dataset.npz")
    assert set(m["training"]["dataset"]["class_counts"]) == set(SMALL_TASKS)
    assert set(m["metrics"]["test"]) == set(SMALL_TASKS)
    assert all(0 < t["temperature"] for t in m["tasks"])
    for f in ("metrics.json", "confusion_test.png", "REPORT.md"):
        assert (dest / f).stat().st_size > 0
    metrics = json.loads((dest / "metrics.json").read_text())
    assert set(metrics) >= {"lmmoe", "single", "classical", "dataset"}
    for task in SMALL_TASKS:
        assert store.load(dest / "baselines" / f"single-{task}").manifest["tasks"][0]["name"] == task
    assert store.next_version(tmp_path / "store", "tiny") == "2"


def test_summary_bins_are_fitted_and_shipped_with_the_model_and_its_baselines(tmp_path: Path) -> None:
    import torch

    dest = train_tiny(tmp_path, epochs=1, baselines=True, summary_bins=4)
    for path in (dest, *(dest / "baselines").iterdir()):
        loaded = store.load(path)
        assert loaded.manifest["architecture"]["summary_bins"] == 4
        lo = loaded.module.summary_code.lo
        # Fitted on the training flows, not left at the even spread over [0, 1] it starts with.
        assert lo.shape[1] == 4 and not torch.allclose(lo, torch.linspace(0, 1, 5)[:-1].expand_as(lo))


@pytest.mark.parametrize("option, rows", [("size_embed", 337), ("size_bag", 2 * 337)])
def test_the_size_embeddings_are_trained_and_shipped_with_the_model_and_its_baselines(
        tmp_path: Path, option: str, rows: int) -> None:
    from multa_broker.model.reexport import rebuild

    dest = train_tiny(tmp_path, epochs=1, baselines=True, **{option: 4})
    weight = f"pre.{option}.0.weight"
    for path in (dest, *(dest / "baselines").iterdir()):
        loaded = store.load(path)
        assert loaded.manifest["architecture"][option] == 4
        assert loaded.module.state_dict()[weight].shape == (rows, 4)
        if loaded.manifest["kind"] == "single-lstm":  # the LMMoE is stored fused: --reexport refuses it
            # What --reexport rebuilds from the manifest has the same embedding.
            assert rebuild(loaded).state_dict()[weight].shape == (rows, 4)


def test_tasks_left_out_of_the_bag_are_stored_without_it(tmp_path: Path) -> None:
    from multa_broker.model.arch import config_from_manifest

    dest = train_tiny(tmp_path, epochs=1, baselines=True, size_bag=4, size_bag_tasks=["service"])
    lmmoe = store.load(dest)
    assert lmmoe.manifest["architecture"]["size_bag_tasks"] == ["service"]
    assert config_from_manifest(lmmoe.manifest).size_bag_tasks == ["service"]
    service = store.load(dest / "baselines" / "single-service")
    assert service.manifest["architecture"]["size_bag"] == 4
    for other in (p for p in (dest / "baselines").iterdir() if p.name != "single-service"):
        loaded = store.load(other)
        assert "size_bag" not in loaded.manifest["architecture"]
        assert not any("size_bag" in k for k in loaded.module.state_dict())


def test_bag_tasks_must_be_tasks_and_need_the_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from multa_broker.cli import main

    for args, says in ((["--size-bag", "4", "--size-bag-tasks", "service,colour"], "colour"),
                       (["--size-bag-tasks", "service"], "needs --size-bag")):
        assert main(["train", "--dataset", str(tmp_path / "none.npz"), *args]) != 0
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = store.load(train_tiny(tmp_path / "a", epochs=1, flows=150)).manifest["weights_sha256"]
    b = store.load(train_tiny(tmp_path / "b", epochs=1, flows=150)).manifest["weights_sha256"]
    c = store.load(train_tiny(tmp_path / "c", epochs=1, flows=150, seed=1)).manifest["weights_sha256"]
    assert a == b != c
