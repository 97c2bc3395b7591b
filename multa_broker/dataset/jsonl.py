"""Labels from per-flow JSON-lines files, such as the traffic lab's ``labels.jsonl``.

One object per flow::

    {"capture": "http-1.pcap", "proto": "tcp", "orig_h": "10.77.1.2", "orig_p": 40312,
     "resp_h": "10.77.2.2", "resp_p": 80, "ts": 1764221000.123456,
     "service": "http", "encrypted": "cleartext", "tunnel": "none", "threat": "benign"}

A flow is joined on capture + 5-tuple; where the same 5-tuple occurs more
than once, the entry whose ``ts`` is nearest (within ``ts_tolerance`` s) wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from multa_broker.dataset.labelmap import Labels, check_labels, merged
from multa_broker.errors import MultaError
from multa_broker.flow import FlowKey
from multa_broker.taxonomy import TASKS

TS_TOLERANCE = 1.0


@dataclass
class JsonlLabels:
    """All entries of one labels file, grouped by capture and 5-tuple."""

    root: Path
    entries: dict[str, dict[tuple, list[tuple[float, Labels]]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "JsonlLabels":
        path = Path(path)
        out = cls(path.parent)
        try:
            fh = open(path, encoding="utf-8")
        except OSError as e:
            raise MultaError(f"{path}: cannot read labels ({e.strerror})") from None
        with fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                    key = (str(obj["proto"]), str(obj["orig_h"]), int(obj["orig_p"]),
                           str(obj["resp_h"]), int(obj["resp_p"]))
                    capture, ts = str(obj["capture"]), float(obj["ts"])
                except (ValueError, KeyError, TypeError) as e:
                    raise MultaError(f"{where}: bad label line ({e.__class__.__name__}: {e})") from None
                labels = merged(check_labels({t: obj.get(t) for t in TASKS}, where))
                out.entries.setdefault(capture, {}).setdefault(key, []).append((ts, labels))
        return out

    @property
    def captures(self) -> list[str]:
        return sorted(self.entries)

    def labeller(self, capture: str, ts_tolerance: float = TS_TOLERANCE):
        table = self.entries.get(capture, {})

        def label(key: FlowKey) -> Labels:
            cands = table.get(key.tuple5)
            if not cands:
                return {}
            ts, labels = min(cands, key=lambda c: abs(c[0] - key.ts))
            return labels if abs(ts - key.ts) <= ts_tolerance else {}

        return label
