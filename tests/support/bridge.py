"""Helpers for the bridge tests (no tests here): flows, a tiny model, a running service.

The tiny model is a real stored model (model.pt + manifest.json, exported
with :func:`multa_broker.store.export` and loaded by the real Classifier,
which verifies it); its verdicts are a known function of the flow, so a test
can tell every result belongs to its flow:

* ``encrypted`` is "encrypted" when the first packet is larger than 100 bytes;
* ``service``'s top class is ``dns`` for UDP, ``tls`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from multa_broker.bench.fakezeek import FakeZeek
from multa_broker.bridge import config as bconfig
from multa_broker.bridge.metrics import BridgeMetrics
from multa_broker.bridge.service import BridgeService
from multa_broker.flow import Flow, FlowKey

TASKS = {"service": ("dns", "tls", "other"), "encrypted": ("encrypted", "cleartext")}


def make_flow(i: int, n: int = 20, proto: str = "tcp", first: int | None = None) -> Flow:
    rng = random.Random(i)
    sizes = [rng.randint(40, 1500) for _ in range(n)]
    if first is not None:
        sizes[0] = first
    return Flow(FlowKey(proto, f"10.0.{i % 200}.{i % 250 + 1}", 1024 + i % 60000, "192.0.2.7",
                        53 if proto == "udp" else 443, 1_700_000_000.0 + i * 0.001),
                sizes, [rng.random() < 0.5 for _ in range(n)],
                [0] + [rng.randint(0, 200_000) for _ in range(n - 1)], f"Cf{i:06d}")


def expected_labels(f: Flow) -> dict[str, str]:
    return {"service": "dns" if f.key.proto == "udp" else "tls",
            "encrypted": "encrypted" if f.sizes[0] > 100 else "cleartext"}


def write_tiny_model(dest: Path, name: str = "tiny", version: str = "1", n: int = 20,
                     fail: bool = False) -> Path:
    """Export a tiny TorchScript model to the model store layout at ``dest`` (model.pt + manifest.json).

    Loaded with the real :class:`multa_broker.inference.Classifier`, which checks
    its manifest and checksums.
    """
    import torch

    from multa_broker import store

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.task_names = list(TASKS)
            self.n = n
            self.fail = fail
            self.unused = torch.nn.Linear(1, 1)  # a weight, so the weights hash covers something

        def forward(self, sizes: torch.Tensor, dirs: torch.Tensor, iats: torch.Tensor,
                    lengths: torch.Tensor, proto: torch.Tensor) -> list[torch.Tensor]:
            if self.fail:
                raise RuntimeError("tiny model told to fail")
            b = sizes.shape[0]
            udp = (proto == 1).to(torch.float32)
            service = torch.stack([udp * 0.9 + 0.05, (1 - udp) * 0.9 + 0.05, torch.full([b], 0.05)], 1)
            enc = (sizes[:, 0] > 100).to(torch.float32)
            encrypted = torch.stack([enc * 0.8 + 0.1, (1 - enc) * 0.8 + 0.1], 1)
            return [service / service.sum(1, keepdim=True), encrypted]

    manifest = {"name": name, "version": version, "n": n,
                "tasks": [{"name": t, "classes": list(c), "threshold": 0.5} for t, c in TASKS.items()]}
    return store.export(Tiny(), manifest, dest)


class Slowed:
    """A Classifier whose classify() sleeps first: the overload and restart tests need a slow model."""

    def __init__(self, clf: Any, delay_s: float) -> None:
        self.clf, self.delay_s = clf, delay_s
        self.name, self.tasks, self.n, self.classes = clf.name, clf.tasks, clf.n, clf.classes

    def classify(self, flows: Sequence[Flow]) -> list[Any]:
        import time

        if self.delay_s:
            time.sleep(self.delay_s)
        return self.clf.classify(flows)


def tiny_loader(path: str, thresholds: Any) -> Any:
    from multa_broker.inference import Classifier

    return Classifier.load(path, thresholds)


def slow_loader(delay_s: float) -> Any:
    return lambda path, thresholds: Slowed(tiny_loader(path, thresholds), delay_s)


def bridge_config(url: str, model_path: Path, **over: Any) -> bconfig.BridgeConfig:
    """A config for tests: fast reconnects, no metrics server unless asked."""
    data: dict[str, Any] = {
        "websocket": {"url": url, "open_timeout_s": 2.0, "ping_interval_s": None},
        "model": {"path": str(model_path), "poll_s": 0.1},
        "batch": {"max_flows": 64, "max_wait_ms": 2.0},
        "reconnect": {"initial_s": 0.05, "max_s": 0.2, "jitter": 0.1},
        "metrics": {"enabled": False, "port": 0},
        "drain_timeout_s": 5.0,
        "log_interval_s": 0.0,
    }
    for key, value in over.items():
        section, _, leaf = key.partition("__")
        if leaf:
            data.setdefault(section, {})[leaf] = value
        else:
            data[section] = value
    return bconfig.from_dict(data, "test")


@contextlib.asynccontextmanager
async def running(cfg: bconfig.BridgeConfig, loader: Any = tiny_loader,
                  **kw: Any) -> AsyncIterator[BridgeService]:
    """A started BridgeService; on exit it is stopped and must have returned 0."""
    svc = BridgeService(cfg, loader=loader, metrics=BridgeMetrics(), **kw)
    task = asyncio.create_task(svc.run())
    await wait_until(lambda: svc.classifier is not None or task.done(), what="model loaded")
    if task.done():
        task.result()  # raises what run() raised
    try:
        yield svc
    finally:
        svc.stop()
        rc = await asyncio.wait_for(task, 15)
        assert rc == 0


async def wait_until(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def accounted(svc: BridgeService) -> tuple[float, float, float]:
    """(in, out, dropped) from the service's own metrics."""
    m = svc.metrics
    return m.value("multa_bridge_flows_in_total"), m.value("multa_bridge_flows_out_total"), m.dropped()


__all__ = ["FakeZeek", "make_flow", "expected_labels", "write_tiny_model", "tiny_loader", "slow_loader",
           "bridge_config", "running", "wait_until", "accounted"]
