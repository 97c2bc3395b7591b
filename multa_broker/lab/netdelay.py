"""Delay and jitter on the packets a lab host receives, for kernels without netem.

The lab kernel has no ``sch_netem`` (nor ``sch_fq``, which could hold packets to a departure
time), but it has NFQUEUE. An iptables INPUT rule in the host's namespace hands every packet the
host receives to this process over netlink; it holds each one for the drawn delay plus jitter and
then accepts it. (On the sending side a held packet would still count against its TCP socket, and
TCP's small queues would stall the connection.)
Packets leave in the order they came (a packet never overtakes an earlier one: one queue per host,
as on a real link), and one batch verdict releases every packet whose time has come. Loss needs no
process: the runner drops a share of each host's incoming packets with iptables' ``statistic``
match, after the capture point, so the capture shows a lost packet and then its retransmission.

The netlink messages are the few of ``linux/netfilter/nfnetlink_queue.h`` this needs (bind a queue,
copy metadata only, fail open, batch verdicts); no library is needed. Run it as
``python -m multa_broker.lab.netdelay --queue 0 --delay-ms 40 --jitter-ms 4`` inside the namespace.
"""

from __future__ import annotations

import argparse
import collections
import errno
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Deque, Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
#: The netlink message type of a queued packet.
PACKET_MSG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
#: Packets the kernel holds for this queue; beyond it they pass undelayed (fail open), never dropped.
QUEUE_MAXLEN = 8192


@dataclass(frozen=True)
class Delay:
    """One host's receive delay: ``delay_ms`` plus a normal jitter of ``jitter_ms`` (never below 0)."""

    delay_ms: float
    jitter_ms: float = 0.0

    def draw(self, rng: random.Random) -> float:
        """Seconds to hold one packet."""
        d = self.delay_ms + (rng.gauss(0.0, self.jitter_ms) if self.jitter_ms > 0 else 0.0)
        return max(d, 0.0) / 1000.0


class FifoRelease:
    """Release times of held packets; a packet is never released before one that came earlier."""

    def __init__(self, delay: Delay, rng: random.Random):
        self.delay, self.rng = delay, rng
        self.held: Deque[tuple[float, int]] = collections.deque()
        self._last = 0.0

    def hold(self, packet_id: int, now: float) -> None:
        self._last = max(self._last, now + self.delay.draw(self.rng))
        self.held.append((self._last, packet_id))

    def due(self, now: float) -> int | None:
        """The id of the last packet whose time has come (all before it are due too), or None."""
        last = None
        while self.held and self.held[0][0] <= now:
            last = self.held.popleft()[1]
        return last

    def next_at(self) -> float | None:
        return self.held[0][0] if self.held else None


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def config_messages(queue: int) -> list[bytes]:
    """Bind ``queue``, copy metadata only (no payload crosses to user space), fail open when full."""
    return [
        _message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)),
                 1, NLM_F_REQUEST | NLM_F_ACK),
        _message(NFQNL_MSG_CONFIG, queue,
                 _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                 + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
                 + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                 + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
                 2, NLM_F_REQUEST | NLM_F_ACK),
    ]


def verdict_batch(queue: int, last_id: int, seq: int) -> bytes:
    """Accept every packet of ``queue`` up to and including ``last_id``."""
    return _message(NFQNL_MSG_VERDICT_BATCH, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last_id)), seq)


def parse(buf: bytes) -> Iterator[tuple[int, int | None]]:
    """Yield (message type, packet id or netlink error code) for each message in ``buf``."""
    off = 0
    while off + 16 <= len(buf):
        length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", buf, off)
        if length < 16 or off + length > len(buf):
            break
        if mtype == NLMSG_ERROR:
            yield mtype, struct.unpack_from("=i", buf, off + 16)[0]
        elif mtype == PACKET_MSG:
            pos, end, pid = off + 20, off + length, None  # after nlmsghdr (16) and nfgenmsg (4)
            while pos + 4 <= end:
                alen, atype = struct.unpack_from("=HH", buf, pos)
                if alen < 4:
                    break
                if atype & 0x7FFF == NFQA_PACKET_HDR:
                    pid = struct.unpack_from("!I", buf, pos + 4)[0]
                pos += alen + (-alen % 4)
            yield mtype, pid
        else:
            yield mtype, None
        off += length + (-length % 4)


def serve(queue: int, delay: Delay, seed: int) -> int:
    """Hold and release packets until SIGTERM; return how many were delayed."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    for msg in config_messages(queue):
        sock.send(msg)
        for mtype, code in parse(sock.recv(65536)):
            if mtype == NLMSG_ERROR and code:
                raise OSError(-code, f"netlink refused the queue {queue} configuration")
    fifo = FifoRelease(delay, random.Random(seed))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"netdelay: queue {queue} bound, delay {delay.delay_ms} ms, jitter {delay.jitter_ms} ms", flush=True)
    seq, held, overruns = 10, 0, 0
    while not stopping:
        nxt = fifo.next_at()
        wait = 0.5 if nxt is None else max(0.0, nxt - time.monotonic())
        try:
            ready, _, _ = select.select([sock], [], [], wait)
        except InterruptedError:
            continue
        if ready:
            now = time.monotonic()
            try:
                buf = sock.recv(1 << 20)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                # The kernel had more for us than the socket held; with fail open it let the packets it
                # could not hand to us pass undelayed, so nothing is lost and nothing waits on us.
                overruns += 1
                continue
            for mtype, pid in parse(buf):
                if mtype == PACKET_MSG and pid is not None:
                    fifo.hold(pid, now)
                    held += 1
        last = fifo.due(time.monotonic())
        if last is not None:
            seq += 1
            sock.send(verdict_batch(queue, last, seq))
    # Release what is still held, so nothing queued is lost at the end of a scenario.
    if fifo.held:
        sock.send(verdict_batch(queue, fifo.held[-1][1], seq + 1))
    sock.close()
    print(f"netdelay: {held} packets delayed, {overruns} receive overruns", flush=True)
    return held


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m multa_broker.lab.netdelay", description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.delay_ms < 0 or a.jitter_ms < 0:
        p.error("delay and jitter must be at least 0")
    try:
        serve(a.queue, Delay(a.delay_ms, a.jitter_ms), a.seed)
    except OSError as e:
        print(f"netdelay: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
