"""Captures on disk -> connections and flows (the public entry points)."""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Iterator

from multa_broker.capture.extractor import FlowExtractor
from multa_broker.capture.reader import open_capture
from multa_broker.capture.records import ConnectionRecord
from multa_broker.errors import CaptureError
from multa_broker.flow import DEFAULT_N, Flow

log = logging.getLogger("multa.capture")


def read_connections(path: str | os.PathLike[str], *, n: int = DEFAULT_N, verify_checksums: bool = False,
                     min_packets: int = 1,
                     likely_server_ports: tuple[frozenset[int], frozenset[int]] | None = None,
                     ) -> Iterator[ConnectionRecord]:
    """Yield the Zeek connections of one capture, ordered by first-packet time.

    Each record holds the connection's first ``n`` packets as a :class:`Flow`
    and its full per-side packet and IP-byte counts. A capture that is damaged
    part-way yields every connection seen before the damage (as if the capture
    ended there) and then raises :class:`CaptureError` naming the file.
    ``likely_server_ports`` overrides Zeek's default set (tcp ports, udp ports).
    """
    name = os.fspath(path)
    ex = FlowExtractor(n, verify_checksums=verify_checksums, min_packets=min_packets, source=name,
                       likely_server_ports=likely_server_ports)
    error: CaptureError | None = None
    try:
        yield from ex.feed_capture(open_capture(name))
    except CaptureError as e:
        error = e
    yield from ex.finish()
    log.debug("%s: %d frames, %d not in any connection's counts, %d malformed",
              name, ex.packets, ex.skipped, ex.malformed)
    if error is not None:
        raise error
    if ex.packets == 0:
        raise CaptureError(f"{name}: capture holds no packets")


def read_flows(path: str | os.PathLike[str], *, n: int = DEFAULT_N, verify_checksums: bool = False,
               min_packets: int = 1) -> Iterator[Flow]:
    """Yield the flows (first ``n`` packets of each connection) of one capture,
    ordered by first-packet time. See :func:`read_connections`."""
    for rec in read_connections(path, n=n, verify_checksums=verify_checksums, min_packets=min_packets):
        yield rec.flow


def read_many(paths: Iterable[str | os.PathLike[str]], *, n: int = DEFAULT_N, verify_checksums: bool = False,
              min_packets: int = 1,
              on_error: Callable[[CaptureError], None] | None = None) -> Iterator[ConnectionRecord]:
    """Connections of several captures, one capture after the other.

    A capture that fails is reported through ``on_error`` (default: logged)
    and the others are still read; connections read before the failure are kept.
    """
    for path in paths:
        try:
            yield from read_connections(path, n=n, verify_checksums=verify_checksums, min_packets=min_packets)
        except CaptureError as e:
            if on_error is None:
                log.error("%s", e)
            else:
                on_error(e)
