"""``model.sha256``: the bridge serves only the model archive an operator approved (issue 16).

The manifest's own sha256 protects against damage, not against someone who can
write both model.pt and manifest.json: a coherent swap (a valid model with its
own manifest) must be refused too, counted, logged once, and the running model kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multa_broker import store
from multa_broker.errors import MultaError

from test_bridge_service import balanced, run
from support.bridge import (FakeZeek, bridge_config, make_flow, running, tiny_loader, wait_until,
                           write_tiny_model)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
REPO = Path(__file__).resolve().parents[1]


def _sha(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "model.pt").read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "store" / "tiny" / "1")


def _swap_in_another_model(model: Path, tmp_path: Path) -> None:
    """Replace model.pt and manifest.json with another valid, self-consistent model."""
    other = write_tiny_model(tmp_path / "other" / "tiny" / "1", version="2")
    shutil.copy2(other / "manifest.json", model / "manifest.json")
    shutil.copy2(other / "model.pt", model / "model.pt")


def test_store_refuses_an_archive_that_is_not_the_pinned_one(model, tmp_path):
    pin = _sha(model)
    assert store.load(model, sha256=pin).ident == "tiny/1"
    assert store.load(model, sha256=pin.upper()).ident == "tiny/1"
    _swap_in_another_model(model, tmp_path)
    assert store.load(model).ident == "tiny/2"  # its manifest checks pass: only the pin catches it
    with pytest.raises(store.PinMismatch, match=r"model\.pt: sha256 .* is not the approved archive"):
        store.load(model, sha256=pin)


@pytest.mark.parametrize("worker,loader", [("thread", tiny_loader), ("thread", None), ("process", None)],
                         ids=["thread-custom-loader", "thread", "process"])
def test_reload_of_another_archive_is_refused_counted_and_logged_once(model, tmp_path, caplog, worker, loader):
    async def main():
        zeek = await FakeZeek().start()
        cfg = bridge_config(zeek.url, model, model={"path": str(model), "poll_s": 0, "worker": worker,
                                                    "sha256": _sha(model)})
        async with running(cfg, loader=loader) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows([make_flow(1)])
            await wait_until(lambda: len(zeek.results()) == 1, 30)
            _swap_in_another_model(model, tmp_path)
            svc.request_reload()
            await wait_until(lambda: svc.metrics.value("multa_bridge_model_reloads_total", result="refused") == 1, 30)
            assert svc.metrics.value("multa_bridge_model_reloads_total", result="ok") == 0
            assert svc.classifier.name == "tiny/1"
            await zeek.send_flows([make_flow(2)])
            await wait_until(lambda: len(zeek.results()) == 2, 30)
            assert [r.model for r in zeek.results()] == ["tiny/1", "tiny/1"]
            balanced(svc)
        await zeek.stop()

    with caplog.at_level(logging.WARNING, logger="multa.bridge"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "keeping model tiny/1" in lines[0] and "not the approved archive" in lines[0]


def test_start_with_another_archive_is_a_one_line_error(model, tmp_path):
    from multa_broker.bridge.service import BridgeService

    cfg = bridge_config("ws://127.0.0.1:1/v1/messages/json", model,
                        model={"path": str(model), "sha256": "0" * 64})
    with pytest.raises(store.PinMismatch, match="not the approved archive"):
        asyncio.run(BridgeService(cfg, loader=tiny_loader).run())

    f = tmp_path / "multa.yaml"
    for pin, rc in (("0" * 64, 1), (_sha(model), 0)):
        f.write_text(f"model:\n  path: {model}\n  sha256: \"{pin}\"\n")
        out = subprocess.run([sys.executable, "-m", "multa_broker", "bridge", "-c", str(f), "--check"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == rc, out.stderr
        assert "Traceback" not in out.stderr
        if rc:
            assert [x for x in out.stderr.splitlines() if x.startswith("multa bridge")] == [
                f"multa bridge: error: {model / 'model.pt'}: sha256 {_sha(model)[:16]}... is not the approved "
                f"archive (model.sha256 {'0' * 16}...); refusing it"]


def test_pin_must_be_a_sha256():
    from multa_broker.bridge import config

    with pytest.raises(MultaError, match="test: model.sha256 must be 64 hex digits"):
        config.from_dict({"model": {"sha256": "abc"}}, "test")
    with pytest.raises(MultaError, match="model.sha256 must be 64 hex digits"):
        config.from_dict({"model": {"sha256": "g" * 64}}, "test")
    assert config.from_dict({"model": {"sha256": "A" * 64}}, "test").model.sha256 == "A" * 64
