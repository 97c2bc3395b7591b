"""Runs the Zeek package's btests (tests/zeek) where Zeek is installed.

Needs ``zeek`` and ``zeek-cut`` on PATH and ``btest`` (pip package
``btest``) on PATH or beside this interpreter; skips with the reason
otherwise. Trace-based btests additionally skip themselves when
the capture corpus ($MULTA_DATA, default ../shared/data) is absent
(see tests/zeek/btest.cfg).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multa_broker.bench.zeek import PLUGIN_BUILD

BTEST_DIR = Path(__file__).resolve().parent / "zeek"
BIN = Path(sys.executable).parent


def _find(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=str(BIN))


ZEEK = _find("zeek")
BTEST = _find("btest")

pytestmark = [
    pytest.mark.zeek,
    pytest.mark.slow,
    pytest.mark.skipif(ZEEK is None, reason="zeek not on PATH: Zeek package btests (tests/zeek) not run"),
    pytest.mark.skipif(_find("zeek-cut") is None, reason="zeek-cut not on PATH: Zeek package btests not run"),
    pytest.mark.skipif(BTEST is None, reason="btest not installed (pip install btest): Zeek package btests not run"),
]


def _btest(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # btest-diff and btest-bg-* live beside btest; the fake bridge needs this
    # interpreter's websockets.
    env["PATH"] = os.pathsep.join([str(Path(BTEST).parent), env.get("PATH", "")])
    env.setdefault("MULTA_PYTHON", sys.executable)
    return subprocess.run([BTEST, "-d", "-j", "2", *args], cwd=BTEST_DIR, env=env,
                          capture_output=True, text=True, timeout=900)


def test_btests() -> None:
    proc = _btest()
    assert proc.returncode == 0, f"btest failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"


PLUGIN = PLUGIN_BUILD / "__zeek_plugin__"


@pytest.mark.skipif(not PLUGIN.is_file(),
                    reason="Multa::Collector plugin not built (zeek_plugin/build.sh): btests with it not run")
def test_btests_with_the_cpp_collector() -> None:
    proc = _btest("-a", "plugin")
    assert proc.returncode == 0, f"btest -a plugin failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
