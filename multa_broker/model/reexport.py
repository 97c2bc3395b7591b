"""Store a trained model again with today's model code (``multa train --reexport``).

An archive carries the TorchScript code it was exported with. When that code
gets faster without changing what it computes (docs/model.md, "Running the
experts fast"), a stored model's weights are loaded into today's modules and
exported as a new version, its baselines with it. The manifest keeps the
training record, metrics, temperatures and thresholds, and names its source
in ``reexported_from``. Before anything is written, the new modules must give
the source archive's probabilities on the same flows.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from multa_broker import store
from multa_broker.errors import MultaError
from multa_broker.model.arch import config_from_manifest
from multa_broker.model.lmmoe import FlowModel, LMMoE, LMMoEConfig
from multa_broker.model.single import SingleTaskLSTM
from multa_broker.model.speed import synthetic_inputs, take

log = logging.getLogger(__name__)

#: What a model folder holds beside its archive and manifest; copied as they are.
SIDE_FILES = ("metrics.json", "confusion_test.png")
#: Largest difference in any probability allowed between the source archive and the re-export.
TOLERANCE = 1e-5


def rebuild(stored: store.StoredModel) -> FlowModel:
    """The trainable module a stored archive was exported from, with its weights."""
    try:
        cfg = config_from_manifest(stored.manifest)
    except ValueError:
        raise MultaError(f"{stored.path}: cannot re-export a model of kind {stored.manifest.get('kind')!r}") from None
    model: FlowModel = LMMoE(cfg) if isinstance(cfg, LMMoEConfig) else SingleTaskLSTM(cfg)
    try:
        model.load_state_dict(stored.module.state_dict())
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise MultaError(f"{stored.path}: its weights do not fit today's {type(model).__name__} "
                         f"(already re-exported, or another architecture): {first}") from None
    return model.eval()


def _check_same(source: store.StoredModel, model: FlowModel) -> float:
    """Largest probability difference between the archive and the rebuilt model's export form."""
    fresh = store.script_for_export(model)
    worst = 0.0
    with torch.inference_mode():
        for b in (1, 64, 1024):
            x = take(synthetic_inputs(4096, int(source.manifest["n"]), seed=b), b, seed=b)
            for a, c in zip(source.module(*x), fresh(*x)):
                worst = max(worst, float((a - c).abs().max()))
    if worst > TOLERANCE:
        raise MultaError(f"{source.path}: the re-exported model differs from the archive by {worst:.2e} "
                         f"(more than {TOLERANCE:.0e}); not written")
    return worst


def _manifest(source: store.StoredModel, version: str) -> dict[str, Any]:
    m = {k: v for k, v in source.manifest.items()
         if k not in ("archive_sha256", "weights_sha256", "format", "feature_spec", "context_spec")}
    m.update(version=version, reexported_from=f"{source.manifest['name']}/{source.manifest['version']}",
             created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), torch=torch.__version__)
    return m


def reexport(src: Path, version: str, force: bool = False) -> Path:
    """Re-export the model in ``src`` (a store folder ``<store>/<name>/<version>``) as ``version``."""
    source = store.load(src)
    dest = source.path.parent / version
    if dest.resolve() == source.path.resolve():
        raise MultaError(f"{dest}: re-exporting a model onto itself; give another --version")
    if (dest / store.MODEL_FILE).exists() and not force:
        raise MultaError(f"{dest}: a model is already stored there (use another --version or --force)")
    baselines = sorted(p for p in (source.path / "baselines").glob("*") if (p / store.MODEL_FILE).is_file())
    parts = [(source, dest)] + [(store.load(p), dest / "baselines" / p.name) for p in baselines]
    rebuilt = []
    for stored, where in parts:  # every check before the first write
        model = rebuild(stored)
        log.info("%s: largest probability difference %.1e", stored.path, _check_same(stored, model))
        rebuilt.append((stored, model, where))
    for stored, model, where in rebuilt:
        store.export(model, _manifest(stored, version), where)
    for name in SIDE_FILES:
        if (source.path / name).is_file():
            shutil.copyfile(source.path / name, dest / name)
    report = source.path / "REPORT.md"
    if report.is_file():
        ident = f"{source.manifest['name']}/{source.manifest['version']}"
        note = (f"*`{source.manifest['name']}/{version}` is `{ident}` re-exported with the model code of "
                f"multa {_multa_version()} (`multa train --reexport`): the same weights, temperatures and "
                f"thresholds, so every figure below is `{ident}`'s.*\n\n")
        text = report.read_text()
        head, _, rest = text.partition("\n")
        (dest / "REPORT.md").write_text(head.replace(f"/{source.manifest['version']}", f"/{version}", 1)
                                        + "\n\n" + note + rest.lstrip("\n"))
    return dest


def _multa_version() -> str:
    from multa_broker import __version__

    return __version__
