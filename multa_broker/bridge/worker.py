"""The model worker process (``model.worker: process``): the model, and nothing else.

The bridge starts it as ``python -m multa_broker.bridge.worker`` and talks to
it over stdin/stdout with length-prefixed pickles, one request at a time:

* ``("load", path, thresholds, threads, sha256)`` -> ``("ok", ModelInfo)``, ``("error", message)``,
  or ``("refused", message)`` when the archive is not the pinned ``sha256``; a failed load
  keeps the model it had;
* ``("probs", sizes, dirs, iats, lengths, proto, ctx, has_ctx)`` -> ``("ok", [per-task probabilities])``:
  the arrays of :class:`multa_broker.flow.EncodedBatch`, in its field order.

Why a process: in one process the model thread and the event loop share the
GIL, and on a 2-core machine the model ran about 1.5x slower beside a busy
event loop than beside a busy other process (docs/bridge.md). The worker
ignores SIGINT/SIGTERM/SIGHUP: the bridge decides when it ends (it closes
stdin), so a drain is never cut short by a signal sent to the process group.
"""

from __future__ import annotations

import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

_LEN = struct.Struct("!I")


def write_frame(out: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def read_frame(inp: BinaryIO) -> Any:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = inp.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    import numpy as np

    from multa_broker.bridge.model import ModelInfo, load_classifier
    from multa_broker.flow import EncodedBatch
    from multa_broker.store import PinMismatch

    clf = None
    while True:
        req = read_frame(inp)
        if req is None:
            return
        op = req[0]
        try:
            if op == "load":
                _, path, thresholds, threads, sha256 = req
                import torch

                torch.set_num_threads(max(1, int(threads)))
                new = load_classifier(path, thresholds, sha256)
                clf = new
                reply: Any = ("ok", ModelInfo.of(clf))
            elif op == "probs":
                if clf is None:
                    raise RuntimeError("no model loaded")
                batch = EncodedBatch(*(np.asarray(a) for a in req[1:]))
                reply = ("ok", clf.probabilities(batch))
            else:
                reply = ("error", f"unknown request {op!r}")
        except PinMismatch as e:
            reply = ("refused", str(e))
        except Exception as e:  # the parent logs it; the worker keeps serving
            reply = ("error", f"{type(e).__name__}: {e}")
        write_frame(out, reply)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # The protocol owns stdout; anything printed by libraries goes to stderr.
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
