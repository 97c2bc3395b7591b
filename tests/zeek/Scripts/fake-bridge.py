"""A stand-in for the multa bridge in btests.

Connects to Zeek's WebSocket API, subscribes to the flow topic and answers
every flow of every Multa::flows or Multa::packed_flows event (the package's
default encoding) with a canned verdict on the sending node's result topic:
Multa::packed_results to packed flows of version 2 or later, as the real
bridge answers, Multa::results to the others. Writes one line per received batch
("<node> <flows>") to the file named on the command line, and exits when
Zeek closes the connection.

Canned verdicts (deterministic, so baselines hold): flows of at most two
packets are threat "scan" (0.95), others "benign" (0.99); responder port 80
is service "http", anything else "other"; every flow also gets the task
"qos" (unknown to the Zeek package, logged in the extra_* columns).

With --benign every flow is benign (for benchmarks: no notices); with
--silent nothing is answered.

Usage: fake-bridge.py URL BATCH_FILE [--benign] [--silent]
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets

FLOW_TOPIC = "multa/flows"
RESULT_TOPIC_PREFIX = "multa/results/"


def plain(value):
    """Broker JSON v1 value -> Python value (vectors become lists)."""
    if isinstance(value, dict) and "@data-type" in value:
        inner = value["data"]
        if value["@data-type"] in ("vector", "set"):
            return [plain(v) for v in inner]
        return inner
    return value


def typed(kind: str, data):
    return {"@data-type": kind, "data": data}


def vector(items):
    return typed("vector", list(items))


BENIGN = "--benign" in sys.argv
SILENT = "--silent" in sys.argv


def verdict(flow) -> list:
    # Contract v2 flows have a tenth field (ctx), v1 flows nine; packed flows
    # seven, the last "[sizes]|[dirs]|[iats]|[ctx]".
    uid, _orig_h, _orig_p, _resp_h, resp_p, _ts, sizes = flow[:7]
    if isinstance(sizes, str):
        sizes = sizes.split("|")[0].strip("[]").split(", ")
    threat = ("scan", 0.95) if len(sizes) <= 2 and not BENIGN else ("benign", 0.99)
    service = ("http", 0.9) if resp_p == "80/tcp" else ("other", 0.5)
    return [uid, "fake-1", ["service", "threat", "qos"],
            [service[0], threat[0], "bulk"], [service[1], threat[1], 0.25]]


def packed_results_message(topic: str, verdicts: list) -> str:
    text = json.dumps([{"uid": uid, "model": model, "tasks": tasks, "labels": labels, "scores": scores}
                       for uid, model, tasks, labels, scores in verdicts])
    event = vector([typed("string", "Multa::packed_results"), vector([typed("count", 1), typed("string", text)])])
    envelope = vector([typed("count", 1), typed("count", 1), event])
    return json.dumps({"type": "data-message", "topic": topic, **envelope})


def results_message(topic: str, verdicts: list) -> str:
    records = vector(
        vector([typed("string", uid), typed("string", model),
                vector(typed("string", t) for t in tasks),
                vector(typed("string", lab) for lab in labels),
                vector(typed("real", s) for s in scores)])
        for uid, model, tasks, labels, scores in verdicts)
    event = vector([typed("string", "Multa::results"), vector([records])])
    envelope = vector([typed("count", 1), typed("count", 1), event])
    return json.dumps({"type": "data-message", "topic": topic, **envelope})


async def connect(url: str):
    # Zeek may still be starting: retry for up to 30 s.
    for _ in range(300):
        try:
            return await websockets.connect(url)
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"fake-bridge: no WebSocket server at {url}")


async def run(url: str, batch_file: str) -> None:
    ws = await connect(url)
    await ws.send(json.dumps([FLOW_TOPIC]))
    ack = json.loads(await ws.recv())
    if ack.get("type") != "ack":
        raise SystemExit(f"fake-bridge: expected an ack, got {ack}")

    with open(batch_file, "w") as out:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") != "data-message":
                    continue
                name, args = plain(msg)[2][:2]
                render = results_message
                if name == "Multa::flows":
                    node, flows = args
                elif name == "Multa::packed_flows":
                    node, version, flows = args
                    if version >= 2:
                        render = packed_results_message
                else:
                    continue
                out.write(f"{node} {len(flows)}\n")
                out.flush()
                if SILENT:
                    continue
                reply = render(RESULT_TOPIC_PREFIX + node, [verdict(f) for f in flows])
                await ws.send(reply)
        except websockets.ConnectionClosed:
            pass


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
