"""Internet checksums (RFC 1071), verified the cheap way.

The one's-complement sum of 16-bit words is congruent to the whole buffer read
as one big-endian integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), so a
checksum verifies exactly when ``int.from_bytes(buf) % 0xFFFF == 0``. That is
one C-level big-integer operation per packet instead of a Python loop.
"""

from __future__ import annotations

import struct

_PSEUDO4 = struct.Struct("!4s4sBBH")
_PSEUDO6 = struct.Struct("!16s16sIxxxB")


def _ok(buf: bytes) -> bool:
    if len(buf) & 1:
        buf += b"\0"
    return int.from_bytes(buf, "big") % 0xFFFF == 0


def ipv4_header_ok(header: bytes) -> bool:
    return _ok(header)


def transport_ok(src: bytes, dst: bytes, proto: int, segment: bytes) -> bool:
    """Verify a TCP, UDP or ICMPv6 checksum over ``segment`` with the IP pseudo-header."""
    if len(src) == 4:
        pseudo = _PSEUDO4.pack(src, dst, 0, proto, len(segment) & 0xFFFF)
    else:
        pseudo = _PSEUDO6.pack(src, dst, len(segment), proto)
    # Pseudo-header lengths are even, so word alignment carries over.
    return _ok(pseudo + segment)


def icmp4_ok(segment: bytes) -> bool:
    return _ok(segment)
