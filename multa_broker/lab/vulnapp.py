"""A deliberately SQL-injectable web page, the target of the lab's sqlmap scenario.

It runs only inside the lab's server namespace, bound to a lab address
(refusing any other), answers from an in-memory SQLite database and exits by
itself after ``--max-seconds``. The injection is the classic one: the ``id``
query parameter is pasted into the SQL text.

    python -m multa_broker.lab.vulnapp --bind 10.77.0.10 --port 8080 --max-seconds 300
"""

from __future__ import annotations

import argparse
import html
import ipaddress
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LAB_NET = ipaddress.ip_network("10.77.0.0/16")


def make_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL);
        CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT, password TEXT);
    """)
    db.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.5) for i in range(1, 40)])
    db.executemany("INSERT INTO users VALUES (?, ?, ?)", [(1, "admin", "5f4dcc3b5aa765d61d8327deb882cf99"),
                                                         (2, "bob", "e99a18c428cb38d5f260853678922e03")])
    return db


class Handler(BaseHTTPRequestHandler):
    server_version = "shop/0.1"
    protocol_version = "HTTP/1.1"
    db: sqlite3.Connection
    lock = threading.Lock()

    def log_message(self, fmt: str, *args: object) -> None:  # quiet: sqlmap sends thousands
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path != "/item":
            self._send(200, '<html><body><a href="/item?id=1">item 1</a></body></html>')
            return
        item = parse_qs(url.query).get("id", ["1"])[0]
        try:
            with self.lock:
                # The vulnerability on purpose: user input pasted into SQL.
                rows = self.db.execute(f"SELECT name, price FROM items WHERE id = {item}").fetchall()
        except sqlite3.Error as e:
            self._send(500, f"<html><body>database error: {html.escape(str(e))}</body></html>")
            return
        body = "".join(f"<li>{html.escape(str(n))}: {p}</li>" for n, p in rows)
        self._send(200, f"<html><body><ul>{body}</ul></body></html>")

    def _send(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    ap = argparse.ArgumentParser(description="SQL-injectable page for the lab (lab addresses only)")
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--max-seconds", type=float, default=300)
    a = ap.parse_args()
    if ipaddress.ip_address(a.bind) not in LAB_NET:
        ap.error(f"--bind {a.bind} is outside the lab network {LAB_NET}")
    Handler.db = make_db()
    server = ThreadingHTTPServer((a.bind, a.port), Handler)
    server.daemon_threads = True
    threading.Timer(a.max_seconds, server.shutdown).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
