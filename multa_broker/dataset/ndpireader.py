"""Run nDPI's ``ndpiReader`` on a capture and cache its per-flow verdicts.

Captures that come without nDPI result files (``result/X.out``) still get
nDPI's service/encrypted/tunnel verdicts: ``ndpiReader -i CAPTURE -v 2``
prints one line per flow in the same form as those files, so ndpi.py parses
both the same way. (4.2's other outputs do not serve: ``-w FILE`` writes only
the summary tables, and ``-C FILE`` CSV has the protocol but neither the
category nor the ``[Encrypted]``/``[ClearText]`` flag.)

The verdicts are cached, because ndpiReader over a corpus of hundreds of
captures takes minutes and the result only depends on the capture's bytes
and the reader's version::

    $MULTA_CACHE_DIR/ndpi/<ndpiReader version>/<sha256 of the capture>.out
    (default $XDG_CACHE_HOME/multa, else ~/.cache/multa)

A cache file is ndpiReader's standard output, unchanged; delete the folder
to redo it. An upgraded ndpiReader writes to a new version folder, so old
verdicts are never mixed with new ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from multa_broker.errors import MultaError

READER = "ndpiReader"
INSTALL_HINT = "install nDPI's reader (Debian/Ubuntu: apt-get install libndpi-bin)"
#: Flags of every run; part of the cache key through FLAGS_TAG, so a change
#: of flags does not reuse verdicts made with other ones.
FLAGS = ("-v", "2")
FLAGS_TAG = "v2"
TIMEOUT_S = 600


def cache_root() -> Path:
    """multa's cache folder: $MULTA_CACHE_DIR, else $XDG_CACHE_HOME/multa, else ~/.cache/multa."""
    if os.environ.get("MULTA_CACHE_DIR"):
        return Path(os.environ["MULTA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "multa"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=4)
def reader_version(reader: str = READER) -> str:
    """``4.2.0`` for nDPI 4.2; a one-line MultaError when the reader is missing."""
    exe = shutil.which(reader)
    if exe is None:
        raise MultaError(f"{reader}: not found on PATH; the ndpi label source needs it for captures "
                         f"without result files: {INSTALL_HINT}")
    # ndpiReader has no --version; its help starts with "Welcome to nDPI 4.2.0".
    proc = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=30)
    m = re.search(r"nDPI (\S+)", proc.stdout + proc.stderr)
    if not m:
        raise MultaError(f"{exe}: cannot tell its nDPI version from `{reader} -h`")
    return m.group(1).rstrip(",")


@dataclass(frozen=True)
class NdpiReader:
    """Runs ndpiReader with a verdict cache."""

    reader: str = READER
    cache: Path | None = None

    @property
    def version(self) -> str:
        return reader_version(self.reader)

    def cache_dir(self) -> Path:
        root = self.cache if self.cache is not None else cache_root() / "ndpi"
        return root / f"{self.version}-{FLAGS_TAG}"

    def verdicts(self, capture: str | Path) -> Path:
        """Path of the cached ndpiReader output for ``capture``, running the reader if needed."""
        capture = Path(capture)
        out = self.cache_dir() / f"{file_sha256(capture)}.out"
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        exe = shutil.which(self.reader) or self.reader
        # Written beside the cache file and renamed: a crash leaves no half file
        # that a later build would take for the verdicts.
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                proc = subprocess.run([exe, "-i", str(capture), *FLAGS], stdout=fh,
                                      stderr=subprocess.PIPE, text=True, timeout=TIMEOUT_S)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                raise MultaError(f"{capture}: {self.reader} failed (exit {proc.returncode}): {last}")
            os.replace(tmp, out)
        except subprocess.TimeoutExpired:
            raise MultaError(f"{capture}: {self.reader} took over {TIMEOUT_S} s") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out
