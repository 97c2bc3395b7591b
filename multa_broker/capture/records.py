"""What the extractor hands out: a Flow plus the connection's full packet and byte counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multa_broker.flow import Flow


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """One Zeek connection: its first-N-packet :class:`Flow` and the counters
    conn.log reports (``orig_pkts``, ``resp_pkts``, ``orig_ip_bytes``,
    ``resp_ip_bytes``), counted over the whole connection."""

    flow: Flow
    orig_pkts: int
    resp_pkts: int
    orig_ip_bytes: int
    resp_ip_bytes: int
    #: The capture the connection came from.
    source: str = ""

    @property
    def total_packets(self) -> int:
        return self.orig_pkts + self.resp_pkts

    def to_json(self) -> dict[str, Any]:
        out = self.flow.to_json()
        out.update(orig_pkts=self.orig_pkts, resp_pkts=self.resp_pkts,
                   orig_ip_bytes=self.orig_ip_bytes, resp_ip_bytes=self.resp_ip_bytes)
        return out
