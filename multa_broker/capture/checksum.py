"""Internet checksums (RFC 1071), verified the cheap way.

The one's-complement sum of 16-bit words is congruent to the whole buffer read
as one big-endian integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), so a
checksum verifies exactly when ``int.from_bytes(buf) % 0xFFFF == 0``. That is
one C-level big-integer operation per packet instead of a Python loop.
"""

from __future__ import annotations



def _ok(buf: bytes) -> bool:
    if len(buf) & 1:
        buf += b"\0"
    return int.from_bytes(buf, "big") % 0xFFFF == 0


def ipv4_header_ok(header: bytes) -> bool:
    return _ok(header)


def transport_ok(src: bytes, dst: bytes, proto: int, segment: bytes) -> bool:
    """Verify a TCP, UDP or ICMPv6 checksum over ``segment`` with the IP pseudo-header.

    The pseudo-header's words (addresses, protocol, length) are added as
    numbers, which is the same modulo 0xFFFF as summing them as bytes, and
    saves building a copy of the segment.
    """
    n = len(segment)
    seg = int.from_bytes(segment, "big")
    if n & 1:
        seg <<= 8  # pad to a whole word
    pseudo = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + (n if len(src) == 16 else n & 0xFFFF)
    return (pseudo + seg) % 0xFFFF == 0


def icmp4_ok(segment: bytes) -> bool:
    return _ok(segment)
