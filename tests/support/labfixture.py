"""Committed lab runs (tests/fixtures/lab*): their label records, checked against their captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from multa_broker.lab import labels as L


def fixture_records(folder: Path) -> list[dict]:
    """The run's labels.jsonl records; the test skips when the fixture is missing."""
    path = folder / "labels.jsonl"
    if not path.exists():
        pytest.skip(f"lab fixture missing: {path}")
    return L.read(path)


def assert_every_flow_labelled_once(folder: Path, records: list[dict]) -> None:
    """Each capture's records name exactly its flows, each once: the lab has no unexplained traffic."""
    from multa_broker.capture import read_flows

    by_capture: dict[str, list[dict]] = {}
    for r in records:
        by_capture.setdefault(r["capture"], []).append(r)
    for capture, recs in by_capture.items():
        keys = {(f.key.proto, f.key.orig_h, f.key.orig_p, f.key.resp_h, f.key.resp_p, round(f.key.ts, 6))
                for f in read_flows(folder / capture, verify_checksums=False)}
        for r in recs:
            k = (r["proto"], r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["ts"])
            assert k in keys, f"{capture}: labelled flow {k} is not in the capture"
        assert len(recs) == len(keys), capture
