"""`multa classify` on bad outputs and damaged captures (issue 16, items 6 and 7).

Uses the bridge tests' tiny stored model (a real model.pt + manifest, loaded and
verified by the real Classifier), so these tests do not train anything.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from multa_broker.capture import pcapwriter as pw
from multa_broker.cli import main

from support.bridge import write_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

C, S = "10.0.0.1", "10.0.0.2"


def _capture(path: Path, n: int, gz: bool = False) -> Path:
    import random

    rng = random.Random(3)
    frames = [(100.0 + i * 0.01, pw.ether(pw.ip(pw.udp(C, 1024 + i % 60000, S, 53, rng.randbytes(80)))))
              for i in range(n)]
    raw = pw.pcap(frames)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny" / "1")


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("multa classify")]


@pytest.mark.parametrize("where", ["dir", "missing-dir"])
def test_unwritable_output_is_one_line_naming_it(tmp_path, capsys, model, where):
    """Issue 16 (7): `-o DIR` printed an IsADirectoryError traceback."""
    cap = _capture(tmp_path / "c.pcap", 3)
    out = tmp_path if where == "dir" else tmp_path / "nope" / "out.jsonl"
    rc = main(["classify", "--no-progress", "--model", str(model), "-o", str(out), str(cap)])
    err = capsys.readouterr().err
    why = "Is a directory" if where == "dir" else "No such file or directory"
    assert rc == 1 and _errors(err) == [f"multa classify: error: {out}: cannot write the output: {why}"]
    assert "Traceback" not in err


def test_output_file_gets_the_results(tmp_path, capsys, model):
    cap = _capture(tmp_path / "c.pcap", 3)
    assert main(["classify", "--no-progress", "--model", str(model), "-o", str(tmp_path / "o.jsonl"),
                 str(cap)]) == 0
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["model"] == "tiny/1"


def test_closed_pipe_ends_quietly_like_multa_flows(tmp_path, model):
    """Issue 16 (7): `multa classify ... | head -1` blamed every capture with 'Broken pipe', exit 1."""
    cap = _capture(tmp_path / "c.pcap", 3000)  # ~1 MB of JSON lines: far more than a pipe holds
    for sub in (f"classify --no-progress --model {model} {cap} {cap}", f"flows {cap} {cap}"):
        script = (f"{sys.executable} -m multa_broker -q {sub} 2>{tmp_path / 'err'} | head -1 >/dev/null; "
                  f"echo ${{PIPESTATUS[0]}}")
        rc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120).stdout.strip()
        err = (tmp_path / "err").read_text()
        assert rc == "0" and err == "", (sub, rc, err)


def test_cut_gzip_capture_classifies_the_flows_read_before_the_cut(tmp_path, capsys, model):
    """Issue 16 (6): the flows read before the damage are classified, then one error line."""
    whole = _capture(tmp_path / "w.pcap.gz", 200, gz=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) // 2])
    rc = main(["classify", "--no-progress", "--model", str(model), str(cut), str(whole)])
    out, err = capsys.readouterr()
    by_capture: dict[str, int] = {}
    for line in out.splitlines():
        c = json.loads(line)["capture"]
        by_capture[c] = by_capture.get(c, 0) + 1
    assert rc == 1 and by_capture[str(whole)] == 200 and 50 < by_capture[str(cut)] < 200
    (line,) = _errors(err)
    assert line.startswith(f"multa classify: error: {cut}: damaged compressed data") and "offset" in line
