"""Packet analysis: link layers and IP, as Zeek's packet analyzers decode them.

Link layers (Ethernet with FabricPath, VLAN/QinQ, PBB, VN-Tag, LLC/SNAP, MPLS,
PPPoE, PPP, NFLOG, 802.11 with A-MSDUs), IPv4 and IPv6 (extension headers,
home address and routing header, fragment reassembly), then the hand-off to
the transport by IP protocol: TCP (tcp.py), UDP and ICMP (transport.py),
IP-in-IP and GRE (tunnels.py). The link-type dispatch of a captured frame is
:meth:`FlowExtractor.feed <multa_broker.capture.extractor.FlowExtractor.feed>`.

Headers are read from the packet bytes by offset; a frame too short for a
header is dropped where it is found, as Zeek drops it. Functions take the
:class:`~multa_broker.capture.extractor.FlowExtractor` whose state they
change as ``ex``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

# decode, transport and tunnels call one another: imported as modules, so any can load first.
from multa_broker.capture import transport, tunnels
from multa_broker.capture.fragments import FRAG_TIMEOUT, Reassembler
from multa_broker.capture.sessions import T_FRAG, push_timer
from multa_broker.capture.tcp import tcp

if TYPE_CHECKING:
    from multa_broker.capture.extractor import FlowExtractor

_IPV6_EXT = frozenset({0, 43, 60, 44, 51, 50, 135})


def ether(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
    if len(data) - off <= 16:
        return
    if data[off + 12] == 0x89 and data[off + 13] == 0x03:  # Cisco FabricPath
        if 16 + 14 >= len(data) - off:
            return
        off += 16
    et = data[off + 12] << 8 | data[off + 13]
    if et >= 1536:
        ethertype(ex, data, off + 14, wirelen, ts, et, depth, False)
    elif et <= 1500:
        off += 14
        if len(data) - off >= et:
            llc(ex, data, off, wirelen, ts, depth)


def ethertype(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, et: int, depth: int,
              in_vlan: bool) -> None:
    while True:
        if et == 0x0800 or et == 0x86DD:
            ip(ex, data, off, wirelen, ts, depth)
            return
        if et == 0x8100 or ((et == 0x88A8 or et == 0x9100) and not in_vlan):
            if len(data) - off <= 4:
                return
            et = data[off + 2] << 8 | data[off + 3]
            off += 4
            in_vlan = True
            if et < 1536:
                if et <= 1500 and len(data) - off >= 2:
                    llc(ex, data, off, wirelen, ts, depth)
                return
            continue
        if et == 0x8847:
            mpls(ex, data, off, wirelen, ts, depth)
            return
        if et == 0x8864:
            pppoe(ex, data, off, wirelen, ts, depth)
            return
        if et == 0x88E7:  # PBB: skip the I-TAG, then a customer Ethernet frame
            if len(data) - off > 18:
                ether(ex, data, off + 4, wirelen, ts, depth)
            return
        if et == 0x8926:  # VN-Tag
            if len(data) - off <= 6:
                return
            et = data[off + 4] << 8 | data[off + 5]
            off += 6
            if et in (0x8100, 0x88A8, 0x9100):
                in_vlan = False
                continue
            return
        return


def ieee80211(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, depth: int = 0) -> None:
    """802.11 data frames with LLC/SNAP (IEEE802_11Analyzer), including A-MSDUs."""
    n = len(data) - off
    hl = 24
    if hl >= n:
        return
    fc, flags = data[off], data[off + 1]
    if not (fc >> 2) & 0x02 or (fc >> 4) & 0x04:
        return  # management/control frame, or a data subtype without data
    if flags & 0x03 == 0x03:
        hl += 6
    if hl >= n:
        return
    amsdu = False
    if (fc >> 4) & 0x08:  # QoS
        amsdu = bool(data[off + hl] & 0x80)
        if flags & 0x40:
            return  # protected
        hl += 2
    if hl >= n:
        return
    p, end = off + hl, len(data)
    if not amsdu:
        ieee80211_llc(ex, data, p, end, wirelen, ts, depth)
        return
    while p < end:
        if end - p < 14:
            return
        alen = data[p + 12] << 8 | data[p + 13]
        if end - p < alen + 14:
            return
        p += 14
        if not ieee80211_llc(ex, data[:p + alen], p, p + alen, wirelen - (len(data) - p - alen), ts, depth):
            return
        p += alen
        pad = alen % 4
        if end - p >= pad:
            p += pad


def ieee80211_llc(ex: FlowExtractor, data: bytes, p: int, end: int, wirelen: int, ts: float, depth: int) -> bool:
    if end - p < 8 or data[p:p + 6] != b"\xaa\xaa\x03\x00\x00\x00":
        return False
    et = data[p + 6] << 8 | data[p + 7]
    if et == 0x0800 or et == 0x86DD:
        ip(ex, data, p + 8, wirelen, ts, depth)
        return True
    return et == 0x0806 or et == 0x8035


def llc(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
    # Only 802.2 SNAP with OUI 0 carries IP.
    if data[off] != 0xAA or data[off + 1] != 0xAA or len(data) - off < 3:
        return
    hl = 3 if data[off + 2] & 3 == 3 else 4
    if len(data) - off < hl + 5:
        return
    off += hl
    if data[off] or data[off + 1] or data[off + 2]:
        return
    et = data[off + 3] << 8 | data[off + 4]
    if et == 0x0800 or et == 0x86DD:
        ip(ex, data, off + 5, wirelen, ts, depth)


def mpls(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
    while True:
        if len(data) - off <= 4:
            return
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    ip(ex, data, off, wirelen, ts, depth)


def pppoe(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
    n = len(data) - off
    if n <= 8:
        return
    plen = data[off + 4] << 8 | data[off + 5]
    proto = data[off + 6] << 8 | data[off + 7]
    plen = plen - 2 if plen >= 2 else 0
    if proto == 0x0021 or proto == 0x0057:
        ip(ex, data[:off + 8 + min(plen, n - 8)], off + 8, wirelen, ts, depth)


def ppp(ex: FlowExtractor, data: bytes, wirelen: int, ts: float, linktype: int) -> None:
    n = len(data)
    if linktype == 9 and not (data[0] == 0xFF and data[1] == 0x03):
        if n <= 2:
            return
        proto, off = data[0] << 8 | data[1], 2
    else:
        if n <= 4:
            return
        proto, off = data[2] << 8 | data[3], 4
    if proto == 0x0021 or proto == 0x0057:
        ip(ex, data, off, wirelen, ts, 0)
    elif proto == 0x0281:
        mpls(ex, data, off, wirelen, ts, 0)


def nflog(ex: FlowExtractor, data: bytes, wirelen: int, ts: float) -> None:
    n = len(data)
    if n <= 4 or data[1] != 0:
        return
    fam = data[0]
    off = 4
    while True:
        if n - off <= 4:
            return
        tlv_len, tlv_type = struct.unpack_from("<HH", data, off)
        if tlv_type == 9:
            off += 4
            break
        if tlv_len < 4:
            return
        skip = (tlv_len + 3) & ~3
        if skip > n - off:
            return
        off += skip
    if fam in (2, 10):
        ip(ex, data, off, wirelen, ts, 0)


def ip(ex: FlowExtractor, data: bytes, off: int, wirelen: int, ts: float, depth: int) -> None:
    n = len(data) - off
    if n < 20:
        return
    v = data[off] >> 4
    if v == 4:
        ihl = (data[off] & 15) << 2
        total = size = data[off + 2] << 8 | data[off + 3]
        if total == 0:
            # TSO leaves ip_len zero: Zeek drops the packet unless checksums are
            # ignored, then parses with the captured length but counts 0 bytes.
            if ex.verify:
                return
            total = n
        if wirelen - off < total or ihl > total or ihl > n or ihl < 20:
            return
        if ex.verify and int.from_bytes(data[off:off + ihl], "big") % 0xFFFF:
            return  # bad IPv4 header checksum (see checksum.py for the arithmetic)
        proto = data[off + 9]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        frag = data[off + 6] << 8 | data[off + 7]
        if frag & 0x3FFF:
            if n < total:
                if frag & 0x1FFF:
                    return  # incompletely captured non-first fragment
            else:
                whole = fragment(ex, (src, dst, data[off + 4] << 8 | data[off + 5]), data[off:off + ihl],
                                       proto, (frag & 0x1FFF) << 3, bool(frag & 0x2000),
                                       data[off + ihl:off + total], proto, ts)
                if whole is None:
                    return
                hdr, proto, payload = whole
                ihl = len(hdr)
                total = size = (ihl + len(payload)) & 0xFFFF
                if ihl > total:
                    return
                data, off, n, wirelen = hdr + payload, 0, ihl + len(payload), ihl + len(payload)
        plen = size - ihl if size else 0
        if proto == 6:
            tcp(ex, src, dst, data, off + ihl, plen, n - ihl, size, ts)
        elif proto == 17:
            transport.udp(ex, src, dst, data, off + ihl, plen, n - ihl, size, ts, depth, wirelen)
        else:
            l4(ex, proto, src, dst, data, off + ihl, plen, n - ihl, size, ts, depth, wirelen)
    elif v == 6:
        if n < 40:
            return
        total = size = (data[off + 4] << 8 | data[off + 5]) + 40
        if wirelen - off < total:
            return
        nh = data[off + 6]
        hl = 40
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        last = 41
        frag_at = -1
        if nh in _IPV6_EXT:
            nh, hl, last, frag_at, src, dst = ipv6_chain(ex, data, off, n, nh, src, dst)
        if hl > total or hl > n:
            return
        if last == 50 or last == 135 or (last != 44 and nh == 59):
            return  # ESP, Mobility, No Next Header: no connection
        if last == 44:
            fo = data[frag_at + 2] << 8 | data[frag_at + 3]
            fid = int.from_bytes(data[frag_at + 4:frag_at + 8], "big")
            if n < total:
                if fo & 0xFFF8:
                    return
            else:
                whole = fragment(ex, (src, dst, fid), data[off:off + hl - 8], nh, fo & 0xFFF8,
                                       bool(fo & 1), data[off + hl:off + total], nh, ts)
                if whole is None:
                    return
                hdr, nh, payload = whole
                hl = len(hdr)
                size = ((hl + len(payload) - 40) & 0xFFFF) + 40
                total = size
                if hl > total:
                    return
                data, off, n, wirelen = hdr + payload, 0, hl + len(payload), hl + len(payload)
                if nh == 59:
                    return
        l4(ex, nh, src, dst, data, off + hl, total - hl, n - hl, size, ts, depth, wirelen)


def ipv6_chain(ex: FlowExtractor, data: bytes, off: int, n: int, nh: int, src: bytes, dst: bytes):
    """Walk IPv6 extension headers as IPv6_Hdr_Chain::Init does."""
    hl = 40
    last = 41
    frag_at = -1
    final_dst = None
    home = None
    while True:
        rem = n - hl
        if rem < 2:
            break
        p = off + hl
        cur = nh
        if cur == 44 or cur == 50:
            clen = 8
        elif cur == 51:
            clen = 8 + 4 * data[p + 1]
        else:
            clen = 8 + 8 * data[p + 1]
        if clen > rem:
            break
        nxt = data[p]
        if cur == 43 and final_dst is None:
            rtype, segleft, rlen = data[p + 2], data[p + 3], data[p + 1]
            if segleft > 0 and ((rtype == 0 and rlen >= 2 and rlen % 2 == 0) or (rtype == 2 and rlen == 2)):
                final_dst = data[p + clen - 16:p + clen]
        elif cur == 60 and home is None:
            home = home_address(data, p, clen)
        if cur == 44:
            frag_at = p
        hl += clen
        last = cur
        nh = nxt
        if cur in (44, 50, 135) or nh not in _IPV6_EXT:
            break
    return nh, hl, last, frag_at, home or src, final_dst or dst


def home_address(data: bytes, p: int, clen: int) -> bytes | None:
    i, end = p + 2, p + clen
    while i < end:
        t = data[i]
        if t == 0:
            i += 1
            continue
        if end - i < 2 or end - i < 2 + data[i + 1]:
            return None
        if t == 201 and data[i + 1] == 16:
            return data[i + 2:i + 18]
        i += 2 + data[i + 1]
    return None


def fragment(ex: FlowExtractor, key: tuple, hdr: bytes, proto: int, offset: int, more: bool, payload: bytes,
             next_proto: int, ts: float) -> tuple[bytes, int, bytes] | None:
    r = ex.frags.get(key)
    if r is None:
        r = Reassembler(key, hdr, next_proto)
        ex.frags[key] = r
        push_timer(ex, ex.nt + FRAG_TIMEOUT, T_FRAG, r, 0)
    whole = r.add(offset, more, payload, proto)
    if whole is None:
        return None
    r.alive = False
    del ex.frags[key]
    return r.hdr, r.next_proto, whole


def l4(ex: FlowExtractor, proto: int, src: bytes, dst: bytes, data: bytes, poff: int, plen: int, caprem: int,
       size: int, ts: float, depth: int, wirelen: int) -> None:
    if proto == 6:
        tcp(ex, src, dst, data, poff, plen, caprem, size, ts)
    elif proto == 17:
        transport.udp(ex, src, dst, data, poff, plen, caprem, size, ts, depth, wirelen)
    elif proto == 1 or proto == 58:
        transport.icmp(ex, proto, src, dst, data, poff, plen, caprem, size, ts)
    elif proto == 4 or proto == 41:
        tunnels.ip_in_ip(ex, data, poff, caprem, ts, depth, proto)
    elif proto == 47:
        tunnels.gre(ex, data, poff, caprem, ts, depth)
    # Other IP protocols make "unknown_transport" connections in Zeek; not flows here.
