"""What `pip install` gives: the default model, the Zeek scripts and the example capture
travel with the package (issue 16, item 10), found through multa_broker.resources.

The slow test builds a wheel and an sdist of this checkout, installs the wheel with
--no-deps into a fresh venv outside the checkout (its dependencies come from the
running environment's site-packages through a .pth file: no network), and runs the
installed `multa` from a folder outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from multa_broker import resources
from multa_broker.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ("model_store/DEFAULT", "zeek_scripts/__load__.zeek", "examples/example.pcap")


def test_pyproject_lists_every_package():
    from setuptools import find_packages

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=["multa_broker*"]))
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    assert "multa_broker._data" in listed


def test_resources_find_the_checkouts_data(monkeypatch, tmp_path):
    monkeypatch.delenv("MULTA_MODEL_STORE", raising=False)
    assert (resources.model_store() / "DEFAULT").is_file()
    assert (resources.zeek_scripts() / "__load__.zeek").is_file()
    assert resources.example_capture().is_file()
    assert resources.model_store().samefile(ROOT / "model_store")
    monkeypatch.setenv("MULTA_MODEL_STORE", str(tmp_path))
    assert resources.model_store() == tmp_path
    from multa_broker import store

    assert store.repo_store() == tmp_path


def test_zeek_path_prints_the_scripts_folder(capsys):
    assert main(["zeek-path"]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out).samefile(ROOT / "zeek_scripts")


def test_product_code_has_no_checkout_relative_lookups_for_the_data():
    """The data, the checkout's scripts and the capture corpus are found through multa_broker.resources only."""
    offenders = []
    for p in (ROOT / "multa_broker").rglob("*.py"):
        if p.name == "resources.py":
            continue
        text = p.read_text()
        for what in ('/ "model_store"', '/ "zeek_scripts"', '"example.pcap"', "parents[", '"../shared',
                     '"MULTA_DATA"', "MULTA_TRACES"):
            if what in text:
                offenders.append(f"{p.relative_to(ROOT)}: {what}")
    assert offenders == []


def test_the_capture_corpus_is_only_what_multa_data_names(monkeypatch, tmp_path):
    monkeypatch.delenv("MULTA_DATA", raising=False)
    assert resources.capture_corpus() is None
    monkeypatch.setenv("MULTA_DATA", str(tmp_path))
    assert resources.capture_corpus() == tmp_path


def _copy_checkout(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and untracked, not ignored)."""
    try:
        names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], check=True, capture_output=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                                   "__pycache__", "data", "runs", "out"))
        return dest
    for name in filter(None, names):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build(kind: str, src: Path, out: Path, env: dict[str, str]) -> Path:
    """Build a wheel or an sdist of ``src`` into ``out`` with setuptools' PEP 517 backend (no network)."""
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(out)!r}))"
    r = _run([sys.executable, "-c", code], src, env)
    assert r.returncode == 0, r.stderr[-2000:]
    return out / r.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_data_and_the_installed_multa_runs(tmp_path):
    src = _copy_checkout(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("MULTA_MODEL_STORE", "PYTHONPATH")}
    wheel = _build("wheel", src, tmp_path / "dist", env)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        default = z.read("multa_broker/_data/model_store/DEFAULT").decode().strip()
    for d in DATA:
        assert f"multa_broker/_data/{d}" in names, d
    assert f"multa_broker/_data/model_store/{default}/model.pt" in names
    assert f"multa_broker/_data/model_store/{default}/manifest.json" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)

    # The sdist carries the same folders, and a wheel built from it carries them too.
    sdist = _build("sdist", src, tmp_path / "sdist", env)
    with tarfile.open(sdist) as t:
        top = t.getnames()[0].split("/")[0]
        for d in DATA:
            assert f"{top}/{d}" in t.getnames(), d
        t.extractall(tmp_path / "unpacked", filter="data")
    with zipfile.ZipFile(_build("wheel", tmp_path / "unpacked" / top, tmp_path / "dist2", env)) as z:
        assert {f"multa_broker/_data/{d}" for d in DATA} <= set(z.namelist())

    # A fresh venv outside the checkout; its dependencies (torch, numpy, ...) come from
    # this environment's site-packages through a .pth file (not its .pth files: this
    # environment's editable install of multa is not seen there).
    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    site_dir = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         tmp_path, env).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site_dir / "multa-test-deps.pth").write_text("\n".join(deps) + "\n")
    r = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
              str(wheel)], tmp_path, env)
    assert r.returncode == 0, r.stderr[-2000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    multa = str(venv / "bin" / "multa")
    r = _run([str(py), "-c", "import multa_broker, sys; from multa_broker import resources as r; "
              "print(multa_broker.__file__); print(r.model_store()); print(r.example_capture())"], work, env)
    pkg_file, store, example = r.stdout.split()
    assert pkg_file.startswith(str(site_dir)) and store.startswith(str(site_dir)), r.stdout
    assert example.startswith(str(site_dir))

    r = _run([multa, "-q", "classify", "--no-progress", example], work, env)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) > 10
    import json

    assert {json.loads(x)["model"] for x in lines} == {default}

    r = _run([multa, "-q", "bridge", "--check"], work, env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"config ok; model {default}:"), r.stdout

    r = _run([multa, "zeek-path"], work, env)
    assert r.returncode == 0 and r.stdout.strip().startswith(str(site_dir)), r.stdout + r.stderr
    assert (Path(r.stdout.strip()) / "__load__.zeek").is_file()

    # An editable install of the same checkout finds the checkout's own folders
    # through the same module (pyproject maps multa_broker._data to the checkout).
    venv2 = tmp_path / "venv-editable"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(venv2)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    py2 = venv2 / "bin" / "python"
    site2 = Path(_run([str(py2), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      tmp_path, env).stdout.strip())
    (site2 / "multa-test-deps.pth").write_text("\n".join(deps) + "\n")
    r = _run([sys.executable, "-m", "pip", "--python", str(py2), "install", "--no-deps", "--no-index",
              "--no-build-isolation", "-q", "-e", str(src)], tmp_path, env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run([str(venv2 / "bin" / "multa"), "zeek-path"], work, env)
    assert r.returncode == 0 and Path(r.stdout.strip()) == src / "zeek_scripts", r.stdout + r.stderr
    r = _run([str(py2), "-c", "from multa_broker import resources as r; print(r.model_store()); "
              "print(r.example_capture())"], work, env)
    assert r.stdout.split() == [str(src / "model_store"), str(src / "examples" / "example.pcap")], r.stdout
