"""The tasks multa predicts and their classes.

Class order is part of a model's manifest; this module only holds the
defaults that `multa dataset build` labels with and `multa train` trains on.
A missing label is stored as :data:`MISSING` and never guessed.
"""

from __future__ import annotations

#: Label index meaning "this source says nothing about this task".
MISSING = -1

#: Default tasks, in model output order, with their classes.
TASKS: dict[str, tuple[str, ...]] = {
    "service": (
        "dns", "http", "tls", "quic", "ssh", "mail", "ftp", "windows", "remote",
        "voip", "p2p", "database", "iot", "netmgmt", "vpn", "other",
    ),
    "encrypted": ("encrypted", "cleartext"),
    "tunnel": ("none", "vpn", "tor", "dns-tunnel", "other-tunnel"),
    "threat": ("benign", "scan", "bruteforce", "dos", "c2", "exploit"),
}

#: Label the open-set threshold assigns when a task's score is too low.
UNKNOWN = "unknown"


def class_index(task: str, label: str) -> int:
    """Index of ``label`` in ``task``'s classes; ValueError names both when absent."""
    try:
        return TASKS[task].index(label)
    except KeyError:
        raise ValueError(f"unknown task {task!r}") from None
    except ValueError:
        raise ValueError(f"unknown class {label!r} for task {task!r}; known: {', '.join(TASKS[task])}") from None
