"""The optional Multa::Collector plugin's build script (zeek_plugin/build.sh).

zkg runs it as the package's build_command: where the plugin cannot be built
it must say why and succeed without a build/ (zkg then installs the scripts
alone); where it can, the result must be a plugin Zeek loads. Its collector's
flows are compared with the scripts' collector by the btest multa.plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO

ZEEK = shutil.which("zeek")


def _copy(tmp_path):
    shutil.copytree(REPO / "zeek_plugin", tmp_path / "zeek_plugin",
                    ignore=shutil.ignore_patterns("build.log"))
    return tmp_path / "zeek_plugin" / "build.sh"


def _bare_path(tmp_path):
    """A PATH with only the tools build.sh needs besides Zeek's."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("dirname", "rm"):
        os.symlink(shutil.which(tool), bindir / tool)
    return str(bindir)


def test_build_script_skips_cleanly_without_zeek_config(tmp_path):
    script = _copy(tmp_path)
    proc = subprocess.run(["/bin/sh", str(script)], env={"PATH": _bare_path(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "not built (no zeek-config on PATH)" in proc.stderr
    assert not (tmp_path / "build").exists()


def test_build_script_fails_when_the_plugin_is_required(tmp_path):
    script = _copy(tmp_path)
    proc = subprocess.run(["/bin/sh", str(script)],
                          env={"PATH": _bare_path(tmp_path), "MULTA_PLUGIN": "require"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no zeek-config on PATH" in proc.stderr


@pytest.mark.zeek
@pytest.mark.skipif(ZEEK is None or shutil.which("zeek-config") is None or shutil.which("cmake") is None,
                    reason="needs zeek, zeek-config and cmake on PATH to build the plugin")
def test_build_script_builds_a_plugin_zeek_loads(tmp_path):
    script = _copy(tmp_path)
    proc = subprocess.run(["/bin/sh", str(script)], env={**os.environ, "MULTA_PLUGIN": "require"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (tmp_path / "zeek_plugin" / "build.log").read_text()[-3000:]
    build = tmp_path / "build"
    assert (build / "__zeek_plugin__").is_file()
    env = {**os.environ, "ZEEK_PLUGIN_PATH": str(build), "ZEEK_PLUGIN_ACTIVATE": "Multa::Collector"}
    shown = subprocess.run([ZEEK, "-N", "Multa::Collector"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert "Multa::Collector" in shown.stdout, shown.stderr
    # Loaded with the package, the plugin collects; MULTA_COLLECTOR=scripts keeps the scripts'.
    probe = ["-b", str(REPO / "zeek_scripts"), "-e",
             "event zeek_init() { print Multa::plugin_collects, |ConnThreshold::generic_packet_thresholds|; }"]
    on = subprocess.run([ZEEK, *probe], env=env, capture_output=True, text=True, timeout=60)
    off = subprocess.run([ZEEK, *probe], env={**env, "MULTA_COLLECTOR": "scripts"}, capture_output=True,
                         text=True, timeout=60)
    assert on.stdout.split() == ["T,", "0"], on.stderr
    assert off.stdout.split() == ["F,", "20"], off.stderr
