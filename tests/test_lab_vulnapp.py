"""The lab's vulnerable shop: each flaw the exploit scenarios aim at is really there."""

from __future__ import annotations

import http.client
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import quote

import pytest

from multa_broker.lab import vulnapp


@pytest.fixture
def shop():
    def start(keepalive: int = 0):
        handler = type("H", (vulnapp.Handler,), {"db": vulnapp.make_db(), "keepalive_requests": keepalive})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    servers: list[ThreadingHTTPServer] = []
    yield start
    for s in servers:
        s.shutdown()


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str]:
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read().decode()


def test_each_flaw_answers_as_a_vulnerable_page_would(shop) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shop(), timeout=5)
    assert _get(conn, "/item?id=" + quote("1 OR 1=1"))[1].count("<li>") == 39  # SQL pasted in
    assert _get(conn, "/item?id=" + quote("1'"))[0] == 500
    assert "<script>x</script>" in _get(conn, "/search?q=" + quote("<script>x</script>"))[1]  # unescaped
    assert "root:x:0:0" in _get(conn, "/view?file=" + quote("../../../../etc/passwd"))[1]
    assert _get(conn, "/view?file=etc/passwd")[0] == 404  # no traversal, no "file"
    conn.request("POST", "/login", body="login=" + quote("' OR '1'='1' --") + "&password=x",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "admin" in conn.getresponse().read().decode()


def test_the_shop_closes_a_connection_after_its_request_limit(shop) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shop(keepalive=2), timeout=5)
    conn.request("GET", "/")
    first = conn.getresponse()
    first.read()
    assert first.getheader("Connection") is None
    conn.request("GET", "/")
    second = conn.getresponse()
    second.read()
    assert second.getheader("Connection") == "close"


def test_the_shop_refuses_an_address_outside_the_lab(monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["vulnapp", "--bind", "127.0.0.1"])
    with pytest.raises(SystemExit):
        vulnapp.main()
