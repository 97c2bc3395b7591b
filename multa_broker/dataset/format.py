"""The dataset file: labelled flows as arrays, one ``.npz`` per dataset.

Every flow keeps up to :data:`multa_broker.flow.MAX_N` packets so a model of
any N can train from the same file. Labels are one int16 column per task,
with :data:`multa_broker.taxonomy.MISSING` where a source says nothing.
Splits are assigned per capture file, never per flow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multa_broker.context import N_FEATURES as N_CTX
from multa_broker.errors import MultaError
from multa_broker.flow import MAX_N, EncodedBatch
from multa_broker.taxonomy import MISSING

SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass
class FlowDataset:
    """Columns, all with F rows.

    sizes/dirs/iats: float32 [F, MAX_N]; lengths, proto: int64 [F];
    orig_p, resp_p: int32 [F] (kept for analysis only, never model input);
    labels: int16 [F, T] in ``tasks`` order; split: int8 [F] (index into SPLITS);
    capture: int32 [F] (index into ``captures``); keys: str [F] (FlowKey text);
    ctx: uint16 [F, 6] host context (:mod:`multa_broker.context`; zeros where absent),
    has_ctx: bool [F] whether the flow had it. Files written before host context
    existed load with ``has_ctx`` all False and ``ctx`` zeros.
    """

    sizes: np.ndarray
    dirs: np.ndarray
    iats: np.ndarray
    lengths: np.ndarray
    proto: np.ndarray
    orig_p: np.ndarray
    resp_p: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    capture: np.ndarray
    keys: np.ndarray
    tasks: dict[str, list[str]]
    captures: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    ctx: np.ndarray | None = None
    has_ctx: np.ndarray | None = None

    def __post_init__(self) -> None:
        f = len(self)
        if self.ctx is None:
            self.ctx = np.zeros((f, N_CTX), CTX_DTYPE)
        if self.has_ctx is None:
            self.has_ctx = np.zeros(f, bool)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def task_labels(self, task: str) -> np.ndarray:
        return self.labels[:, self.task_names.index(task)]

    def subset(self, rows: np.ndarray) -> "FlowDataset":
        """Rows selected by a boolean mask or an index array (metadata shared)."""
        cols = {name: getattr(self, name)[rows] for name in _ARRAYS}
        return FlowDataset(**cols, tasks=self.tasks, captures=self.captures, meta=self.meta)

    def split_rows(self, name: str) -> "FlowDataset":
        return self.subset(self.split == SPLITS.index(name))

    def capture_splits(self) -> dict[str, int]:
        """Capture name -> its split index (into SPLITS), for every capture with rows here."""
        idx, first = np.unique(self.capture, return_index=True)
        return {self.captures[int(c)]: int(self.split[f]) for c, f in zip(idx, first)}

    def encoded(self, n: int) -> EncodedBatch:
        """The model inputs for the first ``n`` packets, as :func:`multa_broker.flow.encode` makes them."""
        n = min(n, self.sizes.shape[1])
        return EncodedBatch(
            np.ascontiguousarray(self.sizes[:, :n]),
            np.ascontiguousarray(self.dirs[:, :n]),
            np.ascontiguousarray(self.iats[:, :n]),
            np.minimum(self.lengths, n).astype(np.int64),
            self.proto.astype(np.int64),
            self.ctx.astype(np.float32),
            self.has_ctx.astype(bool),
        )

    def capture_sources(self) -> list[str]:
        """The source of each capture (aligned with ``captures``).

        From ``meta["capture_sources"]``; files written before that key existed
        get it derived from the capture names.
        """
        given = self.meta.get("capture_sources")
        if isinstance(given, list) and len(given) == len(self.captures):
            return [str(s) for s in given]
        return [source_of_capture(c) for c in self.captures]

    def sources(self) -> np.ndarray:
        """The source id of every flow (str [F]): a label source's name or ``lab/<family>``."""
        per_capture = np.array(self.capture_sources() or [""], dtype="U")
        return per_capture[self.capture] if len(self) else np.array([], dtype="U")

    def class_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """{task: {split: {class: count}}}, missing labels left out."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for t, (task, classes) in enumerate(self.tasks.items()):
            out[task] = {}
            for s, sname in enumerate(SPLITS):
                col = self.labels[self.split == s, t]
                out[task][sname] = {c: int((col == i).sum()) for i, c in enumerate(classes)}
        return out

    def save(self, path: str | Path) -> None:
        meta = {"format": FORMAT_VERSION, "tasks": self.tasks, "captures": self.captures, **self.meta}
        cols = {name: getattr(self, name) for name in _ARRAYS}
        cols["keys"] = cols["keys"].astype("U")
        np.savez_compressed(path, **cols, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> "FlowDataset":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                cols = {name: z[name] for name in _REQUIRED_ARRAYS}
                # Optional columns: absent from files written before they existed.
                cols.update({name: z[name] for name in _OPTIONAL_ARRAYS if name in z.files})
        except FileNotFoundError:
            raise MultaError(f"{path}: no such dataset file") from None
        except (OSError, KeyError, ValueError) as e:
            raise MultaError(f"{path}: not a multa dataset file ({e})") from None
        if meta.get("format") != FORMAT_VERSION:
            raise MultaError(f"{path}: dataset format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        f = len(cols["lengths"])
        if "ctx" in cols and cols["ctx"].shape != (f, N_CTX) or "has_ctx" in cols and cols["has_ctx"].shape != (f,):
            raise MultaError(f"{path}: host-context columns do not match its {f} flows")
        tasks = meta.pop("tasks")
        captures = meta.pop("captures")
        meta.pop("format")
        return cls(**cols, tasks=tasks, captures=captures, meta=meta)

    @classmethod
    def empty(cls, tasks: dict[str, list[str]], max_n: int = MAX_N) -> "FlowDataset":
        z = np.zeros
        return cls(
            z((0, max_n), np.float32), z((0, max_n), np.float32), z((0, max_n), np.float32),
            z(0, np.int64), z(0, np.int64), z(0, np.int32), z(0, np.int32),
            np.full((0, len(tasks)), MISSING, np.int16), z(0, np.int8), z(0, np.int32),
            np.array([], dtype="U"), tasks, [],
        )


def lab_source(capture: str) -> str:
    """``lab/<family>``: a lab scenario's name up to its first ``-`` (http-s1.pcap -> lab/http)."""
    name = capture.rsplit("/", 1)[-1]
    family = name.split("-", 1)[0] if "-" in name else name.split(".", 1)[0]
    return f"lab/{family}"


def source_of_capture(name: str) -> str:
    """A capture's source from its dataset name alone, for files without ``capture_sources``.

    Lab captures are named ``lab:<run>/<capture>``; shared corpora
    ``<root>/<path>``, and every built-in source's root is its name.
    """
    if name.startswith("lab:"):
        return lab_source(name)
    return name.split("/", 1)[0]


#: Host-context counts are at most context.MAX_ENTRIES (1000).
CTX_DTYPE = np.uint16

_REQUIRED_ARRAYS = ("sizes", "dirs", "iats", "lengths", "proto", "orig_p", "resp_p",
                    "labels", "split", "capture", "keys")
#: Columns added later (same FORMAT_VERSION: older readers ignore them, older files lack them).
_OPTIONAL_ARRAYS = ("ctx", "has_ctx")
_ARRAYS = _REQUIRED_ARRAYS + _OPTIONAL_ARRAYS
