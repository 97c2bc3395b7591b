"""A deliberately vulnerable little web shop, the target of the lab's exploit scenarios.

It runs only inside the lab's server namespace, bound to a lab address
(refusing any other), answers from an in-memory SQLite database and exits by
itself after ``--max-seconds``. Its flaws are the classic ones, so that each
exploit tool finds something to work on:

* ``/item?id=`` and the ``/login`` form paste their input into the SQL text;
* ``/search?q=`` echoes the query unescaped (reflected cross-site scripting);
* ``/view?file=`` serves pages by name and, given a ``../`` path ending in
  ``etc/passwd``, answers a made-up passwd file: the traversal is imitated,
  no file of the host is ever read.

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


INDEX = ("<html><body><h1>shop</h1><ul>"
         '<li><a href="/item?id=1">item 1</a></li><li><a href="/item?id=2">item 2</a></li>'
         '<li><a href="/view?file=about.txt">about</a></li><li><a href="/view?file=terms.txt">terms</a></li>'
         '</ul><form action="/search" method="get"><input name="q" value="shoes"><input type="submit"></form>'
         '<form action="/login" method="post"><input name="login" value="guest">'
         '<input name="password" type="password" value="guest"><input type="submit"></form></body></html>')
PAGES = {"about.txt": "A small shop in the lab network.", "terms.txt": "Nothing here is for sale."}
#: What a successful traversal "reads": made up here, never a file of the host.
FAKE_PASSWD = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"


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
    #: Requests answered on one connection before the server closes it (0: as many as the client sends).
    keepalive_requests = 0
    served = 0

    def log_message(self, fmt: str, *args: object) -> None:  # quiet: sqlmap sends thousands
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/item":
            # The vulnerability on purpose: user input pasted into SQL.
            self._rows(f"SELECT name, price FROM items WHERE id = {query.get('id', ['1'])[0]}")
        elif url.path == "/search":
            q = query.get("q", [""])[0]
            # Reflected unescaped on purpose (cross-site scripting).
            self._send(200, f"<html><body><h1>Results for {q}</h1><p>no items found</p></body></html>")
        elif url.path == "/view":
            self._view(query.get("file", ["about.txt"])[0])
        else:
            self._send(200, INDEX)

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        form = parse_qs(self.rfile.read(length).decode("latin-1"))
        if urlparse(self.path).path != "/login":
            self._send(404, "<html><body>not found</body></html>")
            return
        login, password = form.get("login", [""])[0], form.get("password", [""])[0]
        self._rows(f"SELECT login, id FROM users WHERE login = '{login}' AND password = '{password}'")

    def _rows(self, sql: str) -> None:
        try:
            with self.lock:
                rows = self.db.execute(sql).fetchall()
        except sqlite3.Error as e:
            self._send(500, f"<html><body>database error: {html.escape(str(e))}</body></html>")
            return
        body = "".join(f"<li>{html.escape(str(n))}: {p}</li>" for n, p in rows)
        self._send(200, f"<html><body><ul>{body}</ul></body></html>")

    def _view(self, name: str) -> None:
        if "../" in name.replace("\\", "/") and name.rstrip("\x00").endswith("etc/passwd"):
            self._send(200, f"<html><body><pre>{FAKE_PASSWD}</pre></body></html>")
        elif name in PAGES:
            self._send(200, f"<html><body><pre>{PAGES[name]}</pre></body></html>")
        else:
            self._send(404, f"<html><body>no such page: {html.escape(name)}</body></html>")

    def _send(self, code: int, text: str) -> None:
        data = text.encode()
        self.served += 1
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        if self.keepalive_requests and self.served >= self.keepalive_requests:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    ap = argparse.ArgumentParser(description="SQL-injectable page for the lab (lab addresses only)")
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--keepalive-requests", type=int, default=0,
                    help="close a connection after this many requests (default 0: never)")
    a = ap.parse_args()
    if ipaddress.ip_address(a.bind) not in LAB_NET:
        ap.error(f"--bind {a.bind} is outside the lab network {LAB_NET}")
    Handler.db = make_db()
    Handler.keepalive_requests = max(0, a.keepalive_requests)
    server = ThreadingHTTPServer((a.bind, a.port), Handler)
    server.daemon_threads = True
    threading.Timer(a.max_seconds, server.shutdown).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
