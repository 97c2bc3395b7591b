"""Where the package's data is: the default model store, the Zeek scripts, the example capture.

Also the one place that finds what is not shipped: the capture corpus
(``$MULTA_DATA`` only; nothing is guessed) and, in a checkout, the lab set-up
script and the C++ plugin's build folder.

The three folders stay at the top of the checkout (``model_store/``,
``zeek_scripts/``, ``examples/example.pcap``). pyproject.toml maps the
checkout's root to the data package ``multa_broker._data``, so:

* a wheel (or sdist) install carries them as ``multa_broker/_data/...`` inside
  the installed package;
* an editable install (``pip install -e .``) maps ``multa_broker._data`` to the
  checkout itself.

Both are found the same way, through :mod:`importlib.resources`. ``$MULTA_MODEL_STORE``
still overrides the model store. This module also implements ``multa zeek-path``.
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from multa_broker.errors import MultaError

DATA_PACKAGE = "multa_broker._data"
HELP = "print the folder of the installed Zeek scripts (for @load)"
#: The environment variable naming the capture corpus folder (what ``../shared/data`` holds).
CORPUS_ENV = "MULTA_DATA"


def _path(name: str) -> Path:
    """``name`` inside the data package, as a file system path (it need not exist)."""
    try:
        root = resources.files(DATA_PACKAGE)
    except ModuleNotFoundError:
        # An editable install made before the data package was mapped (its import
        # hook knows only multa_broker): reinstalling maps it; meanwhile the
        # checkout around the package is the data package.
        root = resources.files("multa_broker") / ".."  # type: ignore[operator]
    return Path(os.path.normpath(str(root / name)))


def _data(name: str) -> Path:
    """``name`` inside the data package, as a file system path."""
    p = _path(name)
    if not p.exists():
        raise MultaError(f"{p}: missing from this installation of multa (reinstall it, or set "
                         f"$MULTA_MODEL_STORE for the model store)")
    return p


def model_store() -> Path:
    """The default model store (``$MULTA_MODEL_STORE`` overrides; it need not exist yet)."""
    env = os.environ.get("MULTA_MODEL_STORE")
    if env:
        return Path(env)
    return _data("model_store")


def zeek_scripts() -> Path:
    """The Zeek package's scripts folder (what ``@load`` takes)."""
    return _data("zeek_scripts")


def example_capture() -> Path:
    """The bundled example capture."""
    return _data("examples") / "example.pcap"


def capture_corpus() -> Path | None:
    """The capture corpus folder named by ``$MULTA_DATA``, or None when it is unset.

    The one way every command finds the corpus when it is not given one; the
    package assumes no location of its own.
    """
    env = os.environ.get(CORPUS_ENV)
    return Path(env) if env else None


def lab_setup_script() -> Path:
    """``scripts/lab-setup.sh`` of a checkout (not shipped in a wheel: it may not exist)."""
    return _path("scripts") / "lab-setup.sh"


def plugin_build() -> Path:
    """Where ``zeek_plugin/build.sh`` puts the Multa::Collector plugin in a checkout (may not exist)."""
    return _path("build")


# ---------------------------------------------------------------- multa zeek-path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print the folder of this installation's Zeek scripts, e.g. for local.zeek: "
                          "@load <that folder>  (or: zeek -r trace.pcap $(multa zeek-path))")


def run(args: argparse.Namespace) -> int:
    path = zeek_scripts()
    if not (path / "__load__.zeek").is_file():
        raise MultaError(f"{path}: no __load__.zeek here; this installation of multa lacks its Zeek scripts")
    print(path)
    return 0
