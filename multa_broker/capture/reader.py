"""Capture files: pcap (micro- and nanosecond), pcapng, and either of them gzip'd.

We read records ourselves instead of through dpkt's readers because the
extractor needs what libpcap hands Zeek and dpkt drops: the wire length of
each packet (Zeek refuses packets whose IP length exceeds it), the link type
of each pcapng interface, and a clear error at the exact record where a file
is damaged. Timestamps are converted the way libpcap does for Zeek (to whole
microseconds, truncating) and then to ``sec + usec / 1e6`` as Zeek's
``Packet::Init`` computes ``network_time``, so gaps match to the microsecond.

A damaged file yields every packet before the damage and then raises
:class:`~multa_broker.errors.CaptureError` naming the file and the offset.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from multa_broker.errors import CaptureError

#: Largest capture length libpcap accepts for a record (its MAXIMUM_SNAPLEN).
MAX_CAPLEN = 262144
_CHUNK = 1 << 22

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


def open_capture(path: str | os.PathLike[str]) -> Iterator[tuple[float, bytes, int, int]]:
    """Iterate ``(ts, data, wirelen, linktype)`` over a capture file.

    Raises CaptureError (naming ``path``) for files that are not captures, and
    after the last good packet for files that are truncated or corrupt.
    """
    name = os.fspath(path)
    try:
        raw = open(name, "rb")
    except OSError as e:
        raise CaptureError(f"{name}: cannot open: {e.strerror or e}") from None
    try:
        stream: BinaryIO = raw
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            stream = _GzipStream(raw)  # type: ignore[assignment]
        else:
            raw.seek(0)
        return _iter_stream(name, stream, raw)
    except BaseException:
        raw.close()
        raise


def _iter_stream(name: str, stream: BinaryIO, closer: BinaryIO | None = None
                 ) -> Iterator[tuple[float, bytes, int, int]]:
    """Pick the format from the magic number; the returned iterator yields
    packets and closes ``closer`` when it ends."""
    buf = _Buffer(name, stream)
    magic = buf.peek(4)
    if len(magic) == 0:
        raise CaptureError(f"{name}: empty file, not a capture")
    if magic in _PCAP_MAGICS:
        return _iter_pcap(name, buf, *_PCAP_MAGICS[magic], closer)
    if magic == _PCAPNG_SHB:
        return _iter_pcapng(name, buf, closer)
    raise CaptureError(f"{name}: not a pcap or pcapng capture (magic {magic.hex()})")


class _GzipStream:
    """Decompresses a gzip stream (members one after the other), handing out every byte it could
    decompress before a cut or damage, and only then raising.

    ``gzip.GzipFile.read(n)`` raises at a cut and loses what it decompressed in that call, so a
    capture cut short gave no packets at all. ``offset`` counts the compressed bytes read.
    """

    _IN = 1 << 16
    _OUT = 1 << 20

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.offset = 0
        self._d = zlib.decompressobj(wbits=31)
        self._fed = False  # the current member has had input
        self._pending = b""  # input left over after a member ended
        self._out = bytearray()
        self._error: Exception | None = None
        self._done = False

    def read(self, n: int) -> bytes:
        while len(self._out) < n and not self._done and self._error is None:
            self._step()
        if not self._out and self._error is not None:
            raise self._error
        chunk = bytes(self._out[:n])
        del self._out[:n]
        return chunk

    def _step(self) -> None:
        if self._d.unconsumed_tail:
            data = self._d.unconsumed_tail
        elif self._pending:
            data, self._pending = self._pending, b""
        else:
            data = self.raw.read(self._IN)
            self.offset += len(data)
            if not data:
                if self._fed and not self._d.eof:
                    self._error = EOFError(f"the gzip stream is cut short after {self.offset} compressed bytes")
                else:
                    self._done = True
                return
        if not self._fed and not data.strip(b"\0"):
            self._done = True  # zero padding after the last member, which gzip(1) accepts
            return
        self._fed = True
        try:
            self._out += self._d.decompress(data, self._OUT)
        except zlib.error as e:
            self._error = zlib.error(f"{e}, within the first {self.offset} compressed bytes")
            return
        if self._d.eof:  # the member ended: another may follow
            self._pending = self._d.unused_data
            self._d = zlib.decompressobj(wbits=31)
            self._fed = False


class _Buffer:
    """A forward-only byte window over a (possibly gzip'd) stream."""

    __slots__ = ("name", "stream", "data", "pos", "base", "eof")

    def __init__(self, name: str, stream: BinaryIO) -> None:
        self.name = name
        self.stream = stream
        self.data = b""
        self.pos = 0
        self.base = 0  # file offset of data[0]
        self.eof = False

    def fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``pos``; False at end of file."""
        while len(self.data) - self.pos < need:
            if self.eof:
                return False
            try:
                chunk = self.stream.read(max(_CHUNK, need))
            except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise CaptureError(f"{self.name}: damaged compressed data ({e}); reading stopped at offset "
                                   f"{self.offset()} of the uncompressed capture") from None
            if not chunk:
                self.eof = True
                return False
            self.base += self.pos
            self.data = self.data[self.pos:] + chunk
            self.pos = 0
        return True

    def peek(self, n: int) -> bytes:
        self.fill(n)
        return self.data[self.pos:self.pos + n]

    def offset(self) -> int:
        return self.base + self.pos


def _iter_pcap(name: str, buf: _Buffer, bo: str, nano: bool, closer: BinaryIO | None
               ) -> Iterator[tuple[float, bytes, int, int]]:
    try:
        if not buf.fill(24):
            raise CaptureError(f"{name}: truncated pcap file header")
        _magic, vmaj, _vmin, _tz, _sig, _snap, network = struct.unpack_from(bo + "IHHiIII", buf.data, buf.pos)
        if vmaj != 2:
            raise CaptureError(f"{name}: unsupported pcap version {vmaj}")
        # The top bits of the link-type field carry FCS information (pcap-savefile(5)).
        linktype = network & 0x0FFFFFFF
        buf.pos += 24
        # libpcap reads the record's seconds and fraction as signed 32-bit values.
        rec = struct.Struct(bo + "iiII")
        unpack = rec.unpack_from
        while True:
            data = buf.data
            pos = buf.pos
            end = len(data)
            # Fast inner loop over what is buffered.
            while pos + 16 <= end:
                sec, frac, incl, orig = unpack(data, pos)
                if pos + 16 + incl > end:
                    break
                if incl > MAX_CAPLEN:
                    buf.pos = pos
                    raise CaptureError(f"{name}: corrupt pcap record at offset {buf.offset()} "
                                       f"(captured length {incl} exceeds {MAX_CAPLEN})")
                if nano:
                    frac = int(frac / 1000)  # C division: truncates toward zero
                yield sec + frac / 1e6, data[pos + 16:pos + 16 + incl], orig, linktype
                pos += 16 + incl
            buf.pos = pos
            if not buf.fill(16):
                if len(buf.data) - buf.pos:
                    raise CaptureError(f"{name}: truncated pcap record header at offset {buf.offset()}")
                return
            sec, frac, incl, orig = unpack(buf.data, buf.pos)
            if incl > MAX_CAPLEN:
                raise CaptureError(f"{name}: corrupt pcap record at offset {buf.offset()} "
                                   f"(captured length {incl} exceeds {MAX_CAPLEN})")
            if not buf.fill(16 + incl):
                raise CaptureError(f"{name}: truncated pcap record at offset {buf.offset()} "
                                   f"(needs {incl} bytes, file ends first)")
    finally:
        if closer is not None:
            closer.close()


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    # Timestamp units per second (if_tsresol).
    units: int
    tsoffset: int


def _iter_pcapng(name: str, buf: _Buffer, closer: BinaryIO | None) -> Iterator[tuple[float, bytes, int, int]]:
    try:
        bo = "<"
        ifaces: list[_Interface] = []
        while True:
            if not buf.fill(12):
                if len(buf.data) - buf.pos:
                    raise CaptureError(f"{name}: truncated pcapng block header at offset {buf.offset()}")
                return
            start = buf.offset()
            btype_raw = buf.data[buf.pos:buf.pos + 4]
            if btype_raw == _PCAPNG_SHB:
                bom = buf.data[buf.pos + 8:buf.pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    bo = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    bo = ">"
                else:
                    raise CaptureError(f"{name}: corrupt pcapng section header at offset {start}")
                ifaces = []  # interface ids are per section
            btype, blen = struct.unpack_from(bo + "II", buf.data, buf.pos)
            if blen < 12 or blen % 4 or blen > MAX_CAPLEN + 4096 + 65536:
                raise CaptureError(f"{name}: corrupt pcapng block at offset {start} (length {blen})")
            if not buf.fill(blen):
                raise CaptureError(f"{name}: truncated pcapng block at offset {start} "
                                   f"(needs {blen} bytes, file ends first)")
            body = buf.data[buf.pos + 8:buf.pos + blen - 4]
            buf.pos += blen
            if btype == 0x0A0D0D0A:
                continue
            if btype == 1:  # Interface Description Block
                if len(body) < 8:
                    raise CaptureError(f"{name}: corrupt pcapng interface block at offset {start}")
                lt, _res, snap = struct.unpack_from(bo + "HHI", body, 0)
                ifaces.append(_parse_idb_options(name, start, bo, lt, snap, body[8:]))
            elif btype == 6 or btype == 2:  # Enhanced Packet Block / obsolete Packet Block
                if len(body) < 20:
                    raise CaptureError(f"{name}: corrupt pcapng packet block at offset {start}")
                if btype == 6:
                    ifid, hi, lo, incl, orig = struct.unpack_from(bo + "IIIII", body, 0)
                else:
                    ifid, _drops, hi, lo, incl, orig = struct.unpack_from(bo + "HHIIII", body, 0)
                if ifid >= len(ifaces) or incl > len(body) - 20:
                    raise CaptureError(f"{name}: corrupt pcapng packet block at offset {start}")
                iface = ifaces[ifid]
                yield _ng_time(iface, (hi << 32) | lo), body[20:20 + incl], orig, iface.linktype
            elif btype == 3:  # Simple Packet Block: no timestamp, interface 0
                if not ifaces or len(body) < 4:
                    raise CaptureError(f"{name}: corrupt pcapng simple packet block at offset {start}")
                (orig,) = struct.unpack_from(bo + "I", body, 0)
                iface = ifaces[0]
                incl = min(orig, iface.snaplen or orig, len(body) - 4)
                yield 0.0, body[4:4 + incl], orig, iface.linktype
            # Other blocks (name resolution, statistics, custom) carry no packets.
    finally:
        if closer is not None:
            closer.close()


def _parse_idb_options(name: str, start: int, bo: str, lt: int, snap: int, opts: bytes) -> _Interface:
    units, offset = 1_000_000, 0
    pos = 0
    while pos + 4 <= len(opts):
        code, olen = struct.unpack_from(bo + "HH", opts, pos)
        if code == 0:
            break
        if pos + 4 + olen > len(opts):
            raise CaptureError(f"{name}: corrupt pcapng interface block at offset {start} "
                               f"(option {code} of {olen} bytes runs past the block)")
        val = opts[pos + 4:pos + 4 + olen]
        if code == 9 and olen >= 1:  # if_tsresol
            r = val[0]
            units = 2 ** (r & 0x7F) if r & 0x80 else 10 ** (r & 0x7F)
        elif code == 14 and olen >= 8:  # if_tsoffset
            (offset,) = struct.unpack_from(bo + "q", val, 0)
        pos += 4 + olen + (-olen % 4)
    if units == 0:
        raise CaptureError(f"{name}: corrupt pcapng interface block at offset {start} (timestamp resolution)")
    return _Interface(lt, snap, units, offset)


def _ng_time(iface: _Interface, t: int) -> float:
    # libpcap turns pcapng timestamps into a struct timeval, truncating to whole
    # microseconds; Zeek then computes sec + usec / 1e6.
    sec, frac = divmod(t, iface.units)
    if iface.units >= 1_000_000:
        usec = frac // (iface.units // 1_000_000) if iface.units % 1_000_000 == 0 else frac * 1_000_000 // iface.units
    else:
        usec = frac * 1_000_000 // iface.units
    return (sec + iface.tsoffset) + usec / 1e6


def iter_bytes(name: str, content: bytes) -> Iterator[tuple[float, bytes, int, int]]:
    """Like :func:`open_capture` over capture bytes already in memory (tests, stdin)."""
    stream: BinaryIO = io.BytesIO(content)
    if content[:2] == b"\x1f\x8b":
        stream = _GzipStream(stream)  # type: ignore[assignment]
    return _iter_stream(name, stream)
