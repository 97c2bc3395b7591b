"""The data card: where a dataset's flows come from and how well each class is covered.

``multa dataset info`` prints it; the model team puts the same card into a
model's manifest and REPORT.md, so it is a plain dict (:func:`data_card`) with
a markdown rendering (:func:`render_markdown`).

A *source* is a label source for the shared corpora (``ndpi``,
``stopddos``, ...) or a lab scenario family (``lab/http``), see
:meth:`FlowDataset.sources`. A class meets the target when its training
split has at least :data:`TARGET_FLOWS` flows from at least
:data:`TARGET_SOURCES` distinct sources: one source alone teaches one
implementation and one network, not the class.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from multa_broker.dataset.format import SPLITS, FlowDataset

TARGET_FLOWS = 300
TARGET_SOURCES = 3
_LAB_ORIGIN = {"origin": "multa traffic lab, generated", "licence": "BSD-3-Clause (multa)"}


def _info(ds: FlowDataset, source: str) -> dict[str, str]:
    known = ds.meta.get("source_info") or {}
    if source in known:
        return {"origin": str(known[source].get("origin", "")), "licence": str(known[source].get("licence", ""))}
    if source.startswith("lab/"):
        return dict(_LAB_ORIGIN)
    # Files built before source_info existed: the built-in source of that name says.
    from multa_broker.dataset.labelmap import builtin_sources

    for src in builtin_sources():
        if src.name == source:
            return {"origin": src.provenance, "licence": src.licence}
    return {"origin": "", "licence": ""}


def data_card(ds: FlowDataset, target_flows: int = TARGET_FLOWS,
              target_sources: int = TARGET_SOURCES) -> dict[str, Any]:
    """The card as a JSON-ready dict: ``sources`` (a list) and ``tasks`` ({task: {class: ...}})."""
    flow_sources = ds.sources()
    cap_sources = ds.capture_sources()
    train = ds.split == SPLITS.index("train")
    sources: list[dict[str, Any]] = []
    for src in sorted(set(cap_sources)):
        rows = flow_sources == src
        per_task: dict[str, dict[str, int]] = {}
        for t, (task, classes) in enumerate(ds.tasks.items()):
            col = ds.labels[rows, t]
            counts = {c: int((col == i).sum()) for i, c in enumerate(classes)}
            per_task[task] = {c: n for c, n in counts.items() if n}
        sources.append({
            "source": src, **_info(ds, src),
            "captures_read": sum(1 for s in cap_sources if s == src),
            "captures": int(len(np.unique(ds.capture[rows]))),
            "flows": int(rows.sum()),
            "train_flows": int((rows & train).sum()),
            "classes": per_task,
        })
    tasks: dict[str, dict[str, dict[str, Any]]] = {}
    for t, (task, classes) in enumerate(ds.tasks.items()):
        col = ds.labels[:, t]
        tasks[task] = {}
        for i, cls in enumerate(classes):
            has = col == i
            in_train = has & train
            by_source = Counter(flow_sources[in_train].tolist())
            n_train = int(in_train.sum())
            tasks[task][cls] = {
                "flows": int(has.sum()),
                "train_flows": n_train,
                "sources": len(by_source),
                "train_flows_by_source": dict(sorted(by_source.items())),
                "meets_target": n_train >= target_flows and len(by_source) >= target_sources,
            }
    under = [f"{task}/{cls}" for task, cs in tasks.items() for cls, v in cs.items() if not v["meets_target"]]
    return {
        "flows": len(ds),
        "captures": int(len(np.unique(ds.capture))) if len(ds) else 0,
        "target": {"train_flows": target_flows, "sources": target_sources},
        "sources": sources,
        "tasks": tasks,
        "under_target": under,
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(card: dict[str, Any]) -> str:
    """The card as markdown tables: sources, then every class of every task."""
    tgt = card["target"]
    out = [f"{card['flows']} labelled flows from {card['captures']} captures, "
           f"{len(card['sources'])} sources. Target per class: at least {tgt['train_flows']} "
           f"training flows from at least {tgt['sources']} sources.", "",
           "| source | origin | licence | captures | flows | train flows |",
           "| --- | --- | --- | ---: | ---: | ---: |"]
    for s in card["sources"]:
        out.append(f"| {_cell(s['source'])} | {_cell(s['origin']) or '-'} | {_cell(s['licence']) or '-'} "
                   f"| {s['captures']} | {s['flows']} | {s['train_flows']} |")
    for task, classes in card["tasks"].items():
        out += ["", f"**{task}**", "", "| class | train flows | sources | all flows | target |",
                "| --- | ---: | ---: | ---: | --- |"]
        for cls, v in classes.items():
            mark = "ok" if v["meets_target"] else "**under**"
            out.append(f"| {cls} | {v['train_flows']} | {v['sources']} | {v['flows']} | {mark} |")
    out += ["", "Flows per class and source (all splits):", ""]
    for s in card["sources"]:
        parts = [f"{task}: " + ", ".join(f"{c} {n}" for c, n in cs.items())
                 for task, cs in s["classes"].items() if cs]
        out.append(f"- {_cell(s['source'])}: " + ("; ".join(parts) if parts else "no labelled flows"))
    if card["under_target"]:
        out += ["", "Under target: " + ", ".join(card["under_target"])]
    return "\n".join(out)
