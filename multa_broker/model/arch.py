"""The architecture a training run builds: the LMMoE and its single-task baselines.

``multa train`` (one run, :mod:`experiment`) and ``multa train --eval loso``
(:mod:`loso`) take the same architecture options, and both build an LMMoE and
a single-task LSTM per task that read the same inputs. :class:`Arch` holds
those options once; it builds each model's config, writes the manifest's
``architecture`` and reads it back (:mod:`reexport`), so an option added here
reaches every model, every manifest and every rebuild alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multa_broker.flow import DEFAULT_N
from multa_broker.model.lmmoe import LMMoEConfig, reads_bag
from multa_broker.model.single import SingleConfig

#: Manifest ``kind`` of each model this module builds.
LMMOE, SINGLE = "lmmoe", "single-lstm"


@dataclass
class Arch:
    n: int = DEFAULT_N
    experts: int = 3
    hidden: int = 32
    tower: int = 32
    dropout: float = 0.1
    #: The single-task LSTMs' width (the baselines).
    single_hidden: int = 64
    #: Towers read the per-flow statistics too (LMMoE and single-task alike).
    stats: bool = True
    #: Bins of the summary statistics' piecewise-linear code (0: off; LMMoEConfig.summary_bins).
    summary_bins: int = 0
    #: Width of the per-packet size embedding (0: off; LMMoEConfig.size_embed).
    size_embed: int = 0
    #: Width of the bag of packet sizes in the summary (0: off; LMMoEConfig.size_bag).
    size_bag: int = 0
    #: Tasks that read the bag (None: every task; LMMoEConfig.size_bag_tasks); a single-task
    #: model of another task is built without it.
    size_bag_tasks: list[str] | None = None
    #: Gates and towers read the host context: True, False, or None for "where the dataset
    #: carries it" (the run decides, :func:`experiment.use_context`).
    context: bool | None = None

    def _shared(self, context: bool) -> dict[str, Any]:
        """What every model of the run has alike: its inputs, tower width and dropout."""
        return dict(n=self.n, tower=self.tower, dropout=self.dropout, stats=self.stats, context=context,
                    summary_bins=self.summary_bins, size_embed=self.size_embed, size_bag=self.size_bag)

    def lmmoe(self, classes: dict[str, list[str]], context: bool) -> LMMoEConfig:
        return LMMoEConfig(tasks=classes, experts=self.experts, hidden=self.hidden,
                           size_bag_tasks=self.size_bag_tasks, **self._shared(context))

    def single(self, task: str, classes: list[str], context: bool) -> SingleConfig:
        shared = self._shared(context)
        if not reads_bag(self.size_bag_tasks, task):
            shared["size_bag"] = 0
        return SingleConfig(tasks={task: classes}, hidden=self.single_hidden, **shared)


def architecture(cfg: LMMoEConfig | SingleConfig) -> dict[str, Any]:
    """The manifest's ``architecture`` of a model built from ``cfg`` (:func:`config_from_manifest`
    reads it back). Options added later are written only where used, so other manifests stay as
    they were."""
    lmmoe = isinstance(cfg, LMMoEConfig)
    arch: dict[str, Any] = ({"type": LMMOE, "experts": cfg.experts, "hidden": cfg.hidden} if lmmoe
                            else {"type": SINGLE, "hidden": cfg.hidden})
    arch.update(tower=cfg.tower, dropout=cfg.dropout, stats=cfg.stats, context=cfg.context,
                summary_bins=cfg.summary_bins)
    if cfg.size_embed:
        arch["size_embed"] = cfg.size_embed
    if cfg.size_bag:
        arch["size_bag"] = cfg.size_bag
        if lmmoe and cfg.size_bag_tasks is not None:
            arch["size_bag_tasks"] = list(cfg.size_bag_tasks)
    return arch


def config_from_manifest(manifest: dict[str, Any]) -> LMMoEConfig | SingleConfig:
    """The config a stored model was built with, from its manifest (the inverse of
    :meth:`Arch.manifest`; manifests older than an option lack it and get its default)."""
    arch = manifest.get("architecture") or {}
    classes = {t["name"]: list(t["classes"]) for t in manifest["tasks"]}
    common = dict(tasks=classes, n=int(manifest["n"]), tower=int(arch.get("tower", 32)),
                  dropout=float(arch.get("dropout", 0.1)), stats=bool(arch.get("stats", True)),
                  context=bool(arch.get("context", False)), summary_bins=int(arch.get("summary_bins", 0)),
                  size_embed=int(arch.get("size_embed", 0)), size_bag=int(arch.get("size_bag", 0)))
    kind = manifest.get("kind")
    if kind == LMMOE:
        bag_tasks = arch.get("size_bag_tasks")
        return LMMoEConfig(experts=int(arch["experts"]), hidden=int(arch["hidden"]),
                           size_bag_tasks=None if bag_tasks is None else list(bag_tasks), **common)
    if kind == SINGLE:
        return SingleConfig(hidden=int(arch["hidden"]), **common)
    raise ValueError(f"no architecture of kind {kind!r}")
