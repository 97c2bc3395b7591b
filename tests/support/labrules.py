"""Lab scenarios driven without root: until the first process would start, so their label rules
and seeded choices can be checked (the runs themselves need network namespaces)."""

from __future__ import annotations

import random
from pathlib import Path

from multa_broker.lab.network import Network
from multa_broker.lab.scenario import Context


class Started(Exception):
    """Raised where the scenario would start its first process."""


class RulesOnly(Context):
    def daemon(self, *a, **k):
        raise Started()

    def client(self, *a, **k):
        raise Started()


def rules_context(tmp_path: Path, seed: int = 1) -> RulesOnly:
    # Network() only names namespaces and hosts; nothing is created until create().
    return RulesOnly("t", Network("test"), None, random.Random(seed), tmp_path)  # type: ignore[arg-type]
