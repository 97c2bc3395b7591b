"""IP fragment reassembly as Zeek 8.0 does it (src/Frag.cc).

Zeek reassembles IPv4 and IPv6 fragments before any connection sees them. The
reassembled packet counts once, at the time its last missing fragment
arrived, with the IP length of the whole datagram: the header of the first
fragment *received* (for IPv6 without its fragment header) plus all payload.
Fragments are keyed by (source, destination, identification) and dropped 5
minutes (``frag_timeout``) after the first one arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Zeek's frag_timeout default.
FRAG_TIMEOUT = 300.0


@dataclass(slots=True)
class Reassembler:
    key: tuple[bytes, bytes, int]
    #: IP header bytes of the first fragment received (IPv6: without the fragment header).
    hdr: bytes
    #: Protocol the reassembled datagram carries.
    next_proto: int
    #: Payload size once known (from the fragment without More Fragments), else 0.
    frag_size: int = 0
    #: (offset, bytes) in arrival order; earlier data wins on overlap, as in Zeek's Reassembler.
    blocks: list[tuple[int, bytes]] = field(default_factory=list)
    alive: bool = True

    def add(self, offset: int, more: bool, payload: bytes, proto: int) -> bytes | None:
        """Add one fragment's payload; return the reassembled payload when complete."""
        upper = offset + len(payload)
        if offset == 0:
            self.next_proto = proto
        if not more:
            if self.frag_size == 0:
                self.frag_size = upper
            elif upper != self.frag_size and upper > self.frag_size:
                self.frag_size = upper
        if self.frag_size and upper > self.frag_size:
            self.frag_size = upper
        if payload:
            self.blocks.append((offset, payload))
        return self._complete()

    def _complete(self) -> bytes | None:
        if not self.frag_size:
            return None
        # Coverage from offset 0 without holes (Zeek's DataBlockList keeps the
        # first data seen for every byte, so overlaps do not matter here).
        spans = sorted((o, o + len(b)) for o, b in self.blocks)
        if not spans or spans[0][0] > 0:
            return None
        reach = 0
        gap = False
        for lo, hi in spans:
            if lo > reach:
                gap = True
                break
            reach = max(reach, hi)
        if gap:
            if reach < self.frag_size:
                return None
            self.frag_size = reach
        elif reach > self.frag_size:
            self.frag_size = reach
        elif reach < self.frag_size:
            return None
        out = bytearray(self.frag_size)
        # Later arrivals first so that earlier data overwrites them.
        for off, b in reversed(self.blocks):
            if off >= reach:
                continue
            end = min(off + len(b), reach, self.frag_size)
            out[off:end] = b[:end - off]
        return bytes(out)
