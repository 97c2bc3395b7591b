"""The bridge: Zeek's flow sequences in, the model's verdicts out (docs/bridge.md, docs/protocol.md).

Modules, one concept each:

* :mod:`.config` -- the YAML configuration (typed dataclasses, defaults, checks);
* :mod:`.codec` -- Broker's JSON data model, every type <-> Python;
* :mod:`.wire` -- parsing WebSocket messages fast (msgspec, or json) and splitting Zeek events;
* :mod:`.events` -- ``Multa::flows`` -> Flows (one decoder for every transport), Results -> ``Multa::results``;
* :mod:`.transport`, :mod:`.websocket`, :mod:`.native` -- connections to Zeek;
* :mod:`.service` -- batching, faults, reload, drain;
* :mod:`.runner`, :mod:`.worker` -- the model off the event loop (a thread, or a worker process);
* :mod:`.model` -- loading and watching the model; probabilities/verdicts -> Results;
* :mod:`.metrics` -- Prometheus metrics; :mod:`.backoff`, :mod:`.ratelog` -- small helpers.

What plays Zeek for tests and ``multa bench bridge|soak`` lives in :mod:`multa_broker.bench`.

Nothing heavy is imported here: ``multa --help`` stays instant.
"""
