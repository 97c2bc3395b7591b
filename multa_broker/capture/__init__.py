"""Offline extractor: pcap, pcapng and gzip'd captures -> Flows with Zeek 8.0's connection semantics.

``read_flows(path)`` yields :class:`~multa_broker.flow.Flow` objects in
first-packet order; ``read_connections(path)`` yields
:class:`ConnectionRecord` objects that add the full per-side packet and
IP-byte counts conn.log reports; :class:`FlowExtractor` works on packets fed
one at a time. See docs/features.md for what matches Zeek and what does not.
"""

from multa_broker.capture.extractor import FlowExtractor
from multa_broker.capture.files import read_connections, read_flows, read_many
from multa_broker.capture.reader import open_capture
from multa_broker.capture.records import ConnectionRecord
from multa_broker.errors import CaptureError
from multa_broker.flow import DEFAULT_N

__all__ = ["DEFAULT_N", "CaptureError", "ConnectionRecord", "FlowExtractor", "open_capture",
           "read_connections", "read_flows", "read_many"]
