"""Measuring and imitating the product: everything behind ``multa bench WHAT``.

* :mod:`.flows` -- ``multa bench flows``: the offline extractor's packets/s;
* :mod:`.model` -- ``multa bench model``: the LMMoE against the single-task models it replaces;
* :mod:`.bridge` -- ``multa bench bridge``: end-to-end flows/s and latency over a real WebSocket;
* :mod:`.soak` -- ``multa bench soak``: the bridge for a bounded time under load and injected faults;
* :mod:`.zeek` -- ``multa bench zeek``: what the Zeek package costs Zeek, with :mod:`.traces`
  (the traces it times), :mod:`.sink` (a WebSocket client that never answers) and
  ``new_packet.zeek`` (the reference collector);
* :mod:`.context` -- ``multa bench context``: out-of-source threat verdicts with host context
  against without, from two ``multa train --eval loso`` runs;
* :mod:`.versus` -- ``multa bench versus``: stored models side by side on a dataset's test split;
* :mod:`.fakezeek` -- Zeek's WebSocket side, played by the bridge benchmarks and the tests;
* :mod:`.loopback` -- a free port on 127.0.0.1, for benchmarks and tests that start servers.

The product (the rest of ``multa_broker``) imports nothing from here;
``multa_broker.commands.bench`` reaches these modules by name when ``multa
bench`` runs (tests/test_layout.py checks both).
"""
