"""Where the package's data is: the default model store, the Zeek scripts, the example capture.

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


def _data(name: str) -> Path:
    """``name`` inside the data package, as a file system path."""
    try:
        root = resources.files(DATA_PACKAGE)
    except ModuleNotFoundError:
        # An editable install made before the data package was mapped (its import
        # hook knows only multa_broker): reinstalling maps it; meanwhile the
        # checkout around the package is the data package.
        root = resources.files("multa_broker") / ".."  # type: ignore[operator]
    p = Path(os.path.normpath(str(root / name)))
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
