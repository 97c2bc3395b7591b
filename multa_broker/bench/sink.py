"""A WebSocket subscriber that reads multa's flow events and never answers.

``multa bench zeek`` runs it for the ``publish`` set-up: Zeek then pays for
publishing to a connected client (Broker data, JSON, WebSocket frames) but
not for results. Run as ``python -m multa_broker.bench.sink PORT``; it
reconnects after each Zeek run until it is terminated.
"""

from __future__ import annotations

import sys
import time

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect


# After a Zeek run ends, wait this long before connecting again: a client
# that reconnects at once can reach a Zeek that is stopping its WebSocket
# server; Zeek 8.0.10 then waits for that connection's thread to end, with
# its server's cleanup thread busy-looping, for as long as the client stays.
RECONNECT_AFTER_CLOSE_S = 0.3


def main(port: int, topic: str = "multa/flows") -> None:
    url = f"ws://127.0.0.1:{port}/v1/messages/json"
    while True:
        try:
            with connect(url, max_size=None, open_timeout=2) as ws:
                ws.send(f'["{topic}"]')
                for _message in ws:
                    pass
            time.sleep(RECONNECT_AFTER_CLOSE_S)
        except (OSError, WebSocketException):
            time.sleep(0.02)


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]))
    except KeyboardInterrupt:
        pass
