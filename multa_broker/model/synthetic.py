"""Tiny, learnable synthetic datasets for tests and development.

Each task's class leaves a distinct trace in the packets, so a working model
learns every task quickly while a broken one (masking, label plumbing, a
paradigm that ignores a task) does not:

* task 0: the size of the originator's packets (and the protocol);
* task 1: the size of the responder's packets;
* task 2: the inter-arrival times;
* task 3 and later: the flow's length.

``partial=True`` mimics the real corpus: most flows are labelled for every
task but the last, the rest only for the last (like threat labels that come
from other captures). Splits are per synthetic capture of 10 flows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from multa_broker.dataset.format import FlowDataset
from multa_broker.flow import MAX_N, PROTOS
from multa_broker.taxonomy import MISSING

SMALL_TASKS: dict[str, list[str]] = {
    "service": ["dns", "http", "tls"],
    "encrypted": ["encrypted", "cleartext"],
    "threat": ["benign", "scan"],
}


def make_dataset(flows: int = 600, tasks: dict[str, list[str]] | None = None, *, n: int = 20,
                 partial: bool = False, seed: int = 0) -> FlowDataset:
    tasks = {k: list(v) for k, v in (tasks or SMALL_TASKS).items()}
    rng = np.random.default_rng(seed)
    t_count = len(tasks)
    classes = np.stack([rng.integers(0, len(c), flows) for c in tasks.values()], axis=1)
    sizes = np.zeros((flows, MAX_N), np.float32)
    dirs = np.zeros((flows, MAX_N), np.float32)
    iats = np.zeros((flows, MAX_N), np.float32)
    lengths = np.zeros(flows, np.int64)
    proto = np.zeros(flows, np.int64)
    n_cls = [len(c) for c in tasks.values()]
    for i in range(flows):
        c = classes[i]
        frac = [c[t] / max(1, n_cls[t] - 1) for t in range(t_count)]
        if t_count >= 4:
            length = int(np.clip(2 + frac[3] * (n - 2) + rng.integers(-1, 2), 2, n))
        else:
            length = int(rng.integers(max(2, n // 2), n + 1))
        lengths[i] = length
        proto[i] = c[0] % 2
        dirs[i, :length] = rng.random(length) < 0.5
        dirs[i, 0] = 1.0
        orig = 60 + 400 * frac[0]
        resp = 600 + 800 * frac[1] if t_count > 1 else 500
        sizes[i, :length] = np.where(dirs[i, :length] > 0, orig, resp) + rng.normal(0, 20, length)
        gap = 10 ** (2 + 3 * frac[2]) if t_count > 2 else 1000
        iats[i, 1:length] = gap * rng.uniform(0.5, 1.5, length - 1)
    sizes[:, :] = np.where(np.arange(MAX_N)[None, :] < lengths[:, None], np.clip(sizes, 40, 1500), 0)
    labels = classes.astype(np.int16)
    if partial and t_count > 1:
        other = rng.random(flows) < 0.3
        labels[other, :-1] = MISSING
        labels[~other, -1] = MISSING
    capture = (np.arange(flows) // 10).astype(np.int32)
    split = np.select([capture % 10 < 7, capture % 10 < 8], [0, 1], 2).astype(np.int8)
    ports = rng.integers(1024, 65535, flows).astype(np.int32)
    keys = np.array([f"{PROTOS[p]}/10.0.0.1:{q}>10.0.0.2:80@{i}.0" for i, (p, q) in enumerate(zip(proto, ports))])
    return FlowDataset(sizes, dirs, iats, lengths, proto, ports, np.full(flows, 80, np.int32), labels,
                       split, capture, keys, tasks, [f"synthetic-{k}.pcap" for k in range(int(capture.max()) + 1)],
                       {"synthetic": True, "seed": seed})


def train_tiny(workdir: str | Path, *, name: str = "tiny", epochs: int = 3, baselines: bool = False,
               flows: int = 300, seed: int = 0, **arch: Any) -> Path:
    """Train and export a tiny LMMoE on a synthetic dataset (for tests); returns its store dir.
    ``arch``: options of :class:`multa_broker.model.arch.Arch` beside the tiny widths."""
    from multa_broker.model.arch import Arch
    from multa_broker.model.experiment import RunSpec, run
    from multa_broker.model.training import TrainConfig

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"{name}-dataset.npz"
    make_dataset(flows, partial=True, seed=seed).save(data)
    spec = RunSpec(dataset=data, out=workdir / "store", name=name, version="1", baselines=baselines,
                   arch=Arch(**{"experts": 2, "hidden": 8, "tower": 8, "single_hidden": 8, **arch}),
                   train=TrainConfig(epochs=epochs, patience=epochs, batch_size=64, lr=1e-2, seed=seed,
                                     progress=False))
    return run(spec)
