"""The model store: TorchScript archives with a manifest, verified on load.

Layout: ``<store>/<name>/<version>/model.pt`` + ``manifest.json`` (plus
metrics and figures a training run writes beside them). The repository's
store is ``model_store/``; its ``DEFAULT`` file names the default model as
``name/version``.

Integrity, and why two copies of the manifest:

* the archive carries the manifest (``_extra_files["manifest.json"]``), so a
  ``model.pt`` copied on its own still says what it is; that copy includes
  ``weights_sha256``, a hash of the model's tensors (names, dtypes, shapes,
  bytes), which the archive *can* contain because it does not hash itself;
* the manifest beside the archive is the same JSON plus ``archive_sha256``,
  the sha256 of the ``model.pt`` file's bytes.

Loading refuses (one-line :class:`MultaError`): a missing or unreadable side
manifest, an archive whose bytes do not match ``archive_sha256``, an archive
whose own manifest differs from the side one, weights that do not match
``weights_sha256``, and a model built for another feature spec or manifest
format. ``verify=False`` skips only the two hashes (for speed on trusted
files); the feature spec and manifest checks always run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multa_broker.errors import MultaError
from multa_broker.context import CONTEXT_SPEC
from multa_broker.flow import FEATURE_SPEC, MAX_N

if TYPE_CHECKING:  # torch is imported lazily: `multa --help` must stay instant
    import torch

log = logging.getLogger("multa.store")

MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
DEFAULT_FILE = "DEFAULT"
MANIFEST_FORMAT = 1
#: Fields only the side manifest has.
SIDE_ONLY = ("archive_sha256",)


def repo_store() -> Path:
    """The default model store: ``model_store/`` of the checkout or of the installed
    package (:mod:`multa_broker.resources`); ``$MULTA_MODEL_STORE`` overrides."""
    from multa_broker import resources

    return resources.model_store()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(module: "torch.nn.Module") -> str:
    """Hash of every parameter and buffer: name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def script(model: "torch.nn.Module") -> "torch.jit.ScriptModule":
    """``torch.jit.script`` without its deprecation warning.

    TorchScript is still the format that loads without the model's Python
    source (the bridge and ``multa classify`` need exactly that); torch 2.x
    warns that it is deprecated in favour of torch.export.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(model)


def script_for_export(model: "torch.nn.Module") -> "torch.jit.ScriptModule":
    """The scripted module :func:`export` stores for ``model``: its ``export_form()`` where it has one (a
    faster form of the same function for inference, as the LMMoE's fused heads), in eval mode."""
    form = getattr(model, "export_form", None)
    return script((form() if callable(form) else model).eval())


def _dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"


def export(model: "torch.nn.Module", manifest: dict[str, Any], dest: str | Path) -> Path:
    """Script ``model`` and write ``dest/model.pt`` and ``dest/manifest.json``; returns ``dest``.

    ``manifest`` needs at least ``name``, ``version``, ``tasks`` (list of
    {name, classes, threshold}) and ``n``; the feature spec, format and hashes
    are filled in here.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    scripted = script_for_export(model)
    inner = {k: v for k, v in manifest.items() if k not in SIDE_ONLY}
    inner.update(format=MANIFEST_FORMAT, feature_spec=FEATURE_SPEC, weights_sha256=weights_sha256(scripted))
    if getattr(model, "context", False):
        inner["context_spec"] = CONTEXT_SPEC
    _check_contents(inner, dest)
    model_path = dest / MODEL_FILE
    tmp = dest / (MODEL_FILE + ".tmp")
    scripted.save(str(tmp), _extra_files={MANIFEST_FILE: _dumps(inner)})
    os.replace(tmp, model_path)
    side = dict(inner, archive_sha256=sha256_file(model_path))
    (dest / MANIFEST_FILE).write_text(_dumps(side))
    log.info("exported %s/%s to %s", manifest.get("name"), manifest.get("version"), dest)
    return dest


@dataclass
class StoredModel:
    """A loaded, verified model: the TorchScript module and its manifest."""

    module: "torch.jit.ScriptModule"
    manifest: dict[str, Any]
    path: Path

    @property
    def ident(self) -> str:
        return f"{self.manifest['name']}/{self.manifest['version']}"

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return list(self.manifest["tasks"])


def resolve(path: str | Path) -> Path:
    """The directory holding ``model.pt`` for a store dir, a ``model.pt`` path or ``default``."""
    if str(path) == "default":
        store = repo_store()
        pointer = store / DEFAULT_FILE
        try:
            ref = pointer.read_text().strip()
        except OSError:
            raise MultaError(f"{pointer}: no default model is set in the model store") from None
        path = store / ref
    p = Path(path)
    if p.is_dir():
        return p
    if p.name.endswith(".pt") and p.exists():
        if p.name != MODEL_FILE:
            raise MultaError(f"{p}: stored models are named {MODEL_FILE} (with {MANIFEST_FILE} beside them)")
        return p.parent
    raise MultaError(f"{p}: no such model (give a model_store/<name>/<version> directory, a model.pt or 'default')")


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MultaError(f"{path}: missing; a model without its manifest is refused") from None
    except (OSError, ValueError) as e:
        raise MultaError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise MultaError(f"{path}: manifest is not a JSON object")
    return manifest


class PinMismatch(MultaError):
    """The archive is not the one an operator approved (the bridge's ``model.sha256``)."""


def check_pin(model_path: Path, got: str, pin: str | None) -> None:
    """Raise :class:`PinMismatch` unless the archive's sha256 ``got`` is the pinned ``pin`` (None: no pin)."""
    if pin is not None and got != pin.strip().lower():
        raise PinMismatch(f"{model_path}: sha256 {got[:16]}... is not the approved archive "
                          f"(model.sha256 {pin.strip().lower()[:16]}...); refusing it")


def load(path: str | Path, verify: bool = True, sha256: str | None = None) -> StoredModel:
    """Load and verify a stored model; refuses anything that does not check out.

    ``sha256`` pins the archive: any other ``model.pt`` is refused (:class:`PinMismatch`),
    whatever its manifest says. The archive is read once, and the bytes that were
    hashed are the bytes loaded.
    """
    import io

    import torch

    model_dir = resolve(path)
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise MultaError(f"{model_path}: no such model file")
    side = read_manifest(model_dir)
    if side.get("format") != MANIFEST_FORMAT:
        raise MultaError(f"{model_dir / MANIFEST_FILE}: manifest format {side.get('format')!r}, "
                         f"this multa reads {MANIFEST_FORMAT}")
    try:
        data = model_path.read_bytes()
    except OSError as e:
        raise MultaError(f"{model_path}: cannot read: {e.strerror or e}") from None
    got = hashlib.sha256(data).hexdigest()
    check_pin(model_path, got, sha256)
    if verify:
        want = side.get("archive_sha256")
        if want != got:
            raise MultaError(f"{model_path}: sha256 {got[:16]}... does not match its manifest "
                             f"({str(want)[:16]}...): the file was changed or corrupted")
    extra = {MANIFEST_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch raises RuntimeError/ValueError/zip errors for damaged archives
        raise MultaError(f"{model_path}: not a loadable TorchScript archive ({str(e).splitlines()[0]})") from None
    try:
        inner = json.loads(extra[MANIFEST_FILE]) if extra[MANIFEST_FILE] else None
    except ValueError:
        inner = None
    if not isinstance(inner, dict):
        raise MultaError(f"{model_path}: the archive carries no readable {MANIFEST_FILE}")
    expected = {k: v for k, v in side.items() if k not in SIDE_ONLY}
    if inner != expected:
        fields = sorted(k for k in set(inner) | set(expected) if inner.get(k) != expected.get(k))
        raise MultaError(f"{model_dir / MANIFEST_FILE}: differs from the manifest inside {MODEL_FILE} "
                         f"(fields: {', '.join(fields)}); refusing a model whose manifest was changed")
    if inner.get("feature_spec") != FEATURE_SPEC:
        theirs = (inner.get("feature_spec") or {}).get("version")
        raise MultaError(f"{model_path}: built for feature spec version {theirs!r} with other definitions, "
                         f"this multa uses version {FEATURE_SPEC['version']}; retrain the model")
    if "context_spec" in inner and inner["context_spec"] != CONTEXT_SPEC:
        theirs = (inner.get("context_spec") or {}).get("version")
        raise MultaError(f"{model_path}: reads host context version {theirs!r} with other definitions, "
                         f"this multa computes version {CONTEXT_SPEC['version']}; retrain the model")
    if verify and weights_sha256(module) != inner.get("weights_sha256"):
        raise MultaError(f"{model_path}: weights do not match the manifest's weights_sha256")
    _check_contents(inner, model_dir)
    if list(module.task_names) != [t["name"] for t in inner["tasks"]] or int(module.n) != int(inner["n"]):
        raise MultaError(f"{model_path}: the model's tasks or N differ from its manifest")
    module.eval()
    return StoredModel(module, inner, model_dir)


def _check_contents(manifest: dict[str, Any], where: Path) -> None:
    """The fields every consumer relies on, with sane values."""
    try:
        tasks = manifest["tasks"]
        assert isinstance(manifest["name"], str) and isinstance(manifest["version"], str)
        assert isinstance(tasks, list) and tasks
        for t in tasks:
            assert isinstance(t["name"], str) and isinstance(t["classes"], list) and t["classes"]
            assert 0.0 <= float(t["threshold"]) <= 1.0
        assert 1 <= int(manifest["n"]) <= MAX_N
    except (KeyError, TypeError, ValueError, AssertionError):
        raise MultaError(f"{where}: manifest lacks or mangles name/version/tasks/n") from None


def next_version(store: Path, name: str) -> str:
    """1 + the largest integer version of ``name`` in ``store`` (1 when there is none)."""
    versions = [int(p.name) for p in (store / name).glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(versions, default=0) + 1)


def set_default(store: Path, name: str, version: str) -> None:
    (store / DEFAULT_FILE).write_text(f"{name}/{version}\n")
