"""A small HTTP/3 server and client on aioquic, for the lab's second QUIC implementation.

aioquic's own example server and client are not in its wheel, so this module
is the thin glue around aioquic's API: the QUIC, TLS 1.3 and HTTP/3 on the
wire are all aioquic's. The server serves files from a folder (and accepts
POST bodies); the client fetches several paths over one connection, all at
once, and can resume a saved TLS session (with 0-RTT when the ticket allows).

    python -m multa_broker.lab.quicapp serve --bind 10.77.0.12 --port 443 --root www --cert c --key k
    python -m multa_broker.lab.quicapp get --host 10.77.0.12 --port 443 /a.bin /b.js

Both exit by themselves (the server after ``--max-seconds``), so nothing
outlives a lab scenario even if its stop is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import ssl
import sys
from pathlib import Path

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from aioquic.tls import SessionTicket

SERVER_NAME = "www.lab.test"


class H3Server(QuicConnectionProtocol):
    """Answers GET with the file under ``root`` (404 if absent) and POST with 204 once the body is in."""

    def __init__(self, *args, root: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._root = root
        self._h3: H3Connection | None = None
        self._requests: dict[int, tuple[str, str]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for ev in self._h3.handle_event(event):
            self._h3_event(ev)

    def _h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived):
            head = dict(ev.headers)
            self._requests[ev.stream_id] = (head.get(b":method", b"GET").decode(), head.get(b":path", b"/").decode())
            if ev.stream_ended:
                self._respond(ev.stream_id)
        elif isinstance(ev, DataReceived) and ev.stream_ended:
            self._respond(ev.stream_id)

    def _respond(self, stream_id: int) -> None:
        assert self._h3 is not None
        method, path = self._requests.pop(stream_id, ("GET", "/"))
        body = b""
        if method == "POST":
            status = 204
        else:
            file = (self._root / path.split("?", 1)[0].lstrip("/")).resolve()
            # Only files inside the root: a path with .. gets a 404 like any missing one.
            if file.is_file() and self._root in file.parents:
                status, body = 200, file.read_bytes()
            else:
                status = 404
        self._h3.send_headers(stream_id, [(b":status", str(status).encode()), (b"server", b"multa-lab-aioquic"),
                                          (b"content-length", str(len(body)).encode())], end_stream=not body)
        if body:
            self._h3.send_data(stream_id, body, end_stream=True)
        self.transmit()


class H3Client(QuicConnectionProtocol):
    """Sends requests and resolves each one's future when its response has ended."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._pending: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._got: dict[int, list[int]] = {}

    async def request(self, method: str, authority: str, path: str, body: bytes = b"") -> tuple[int, int]:
        """(status, body bytes received) of one request on a new stream."""
        sid = self._quic.get_next_available_stream_id()
        headers = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                   (b":path", path.encode()), (b"user-agent", b"multa-lab-aioquic")]
        self._h3.send_headers(sid, headers, end_stream=not body)
        if body:
            self._h3.send_data(sid, body, end_stream=True)
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._pending[sid] = fut
        self._got[sid] = [0, 0]
        self.transmit()
        return await fut

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self._h3.handle_event(event):
            got = self._got.get(ev.stream_id) if hasattr(ev, "stream_id") else None
            if got is None:
                continue
            if isinstance(ev, HeadersReceived):
                got[0] = int(dict(ev.headers).get(b":status", b"0"))
            elif isinstance(ev, DataReceived):
                got[1] += len(ev.data)
            if getattr(ev, "stream_ended", False):
                fut = self._pending.pop(ev.stream_id)
                if not fut.done():
                    fut.set_result((got[0], got[1]))


async def _serve(args: argparse.Namespace) -> None:
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=args.idle_timeout,
                               max_datagram_size=args.max_datagram_size)
    config.load_cert_chain(args.cert, args.key)
    tickets: dict[bytes, SessionTicket] = {}
    # Tickets kept in memory let clients resume (and send 0-RTT) within this server's lifetime.
    await serve(args.bind, args.port, configuration=config, retry=args.retry,
                create_protocol=lambda *a, **kw: H3Server(*a, root=Path(args.root).resolve(), **kw),
                session_ticket_fetcher=lambda label: tickets.pop(label, None),
                session_ticket_handler=lambda t: tickets.__setitem__(t.ticket, t))
    await asyncio.sleep(args.max_seconds)


async def _get(args: argparse.Namespace) -> int:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                               server_name=args.sni, congestion_control_algorithm=args.cc,
                               idle_timeout=args.idle_timeout, max_datagram_size=args.max_datagram_size)
    ticket_file = Path(args.session_file) if args.session_file else None
    if ticket_file and ticket_file.exists():
        with open(ticket_file, "rb") as f:
            config.session_ticket = pickle.load(f)

    def save(ticket: SessionTicket) -> None:
        if ticket_file:
            with open(ticket_file, "wb") as f:
                pickle.dump(ticket, f)

    body = Path(args.post).read_bytes() if args.post else b""
    # Without waiting for the handshake the first requests go out as 0-RTT when a ticket allows it.
    early = config.session_ticket is not None and args.zero_rtt
    async with connect(args.host, args.port, configuration=config, create_protocol=H3Client,
                       session_ticket_handler=save, wait_connected=not early) as client:
        assert isinstance(client, H3Client)
        jobs = [client.request("GET", args.sni, p) for p in args.paths]
        if body:
            jobs.append(client.request("POST", args.sni, "/upload", body))
        results = await asyncio.wait_for(asyncio.gather(*jobs), timeout=args.timeout)
        await asyncio.sleep(0.05)  # let the last ACKs and the session ticket arrive before closing
    bad = [(p, s) for p, (s, _) in zip(args.paths, results) if s != 200]
    for path, (status, size) in zip(args.paths, results):
        print(f"{status} {size} {path}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="multa-lab-quic", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--root", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--retry", action="store_true", help="address validation with a Retry packet")
    s.add_argument("--max-seconds", type=float, default=600)
    g = sub.add_parser("get")
    g.add_argument("--host", required=True)
    g.add_argument("--port", type=int, default=443)
    g.add_argument("--sni", default=SERVER_NAME)
    g.add_argument("--cc", default="reno", choices=["reno", "cubic"])
    g.add_argument("--session-file")
    g.add_argument("--zero-rtt", action="store_true")
    g.add_argument("--post", help="also POST this file's bytes to /upload")
    g.add_argument("--timeout", type=float, default=60)
    g.add_argument("paths", nargs="+")
    for p in (s, g):
        p.add_argument("--idle-timeout", type=float, default=30)
        p.add_argument("--max-datagram-size", type=int, default=1200)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(_serve(args))
        return 0
    return asyncio.run(_get(args))


if __name__ == "__main__":
    sys.exit(main())
