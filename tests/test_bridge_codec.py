"""Broker JSON codec and the Multa event encodings (no network, no model)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json

import pytest

from multa_broker.bench.fakezeek import _check_results, flow_record_json, flow_values, flows_event_values, flows_message
from multa_broker.bridge import codec, events, wire
from multa_broker.flow import MAX_N, FlowError
from multa_broker.protocol import (FLOWS_EVENT, PACKED_RESULT_VERSION, PACKED_RESULTS_EVENT, RESULTS_EVENT, Port,
                                   Result)

from support.bridge import make_flow

UTC = dt.timezone.utc

# Every Broker type the contract uses (and the rest of the data model), with its wire form.
CASES = [
    (None, {"@data-type": "none", "data": {}}),
    (True, {"@data-type": "boolean", "data": True}),
    (codec.Count(0), {"@data-type": "count", "data": 0}),
    (codec.Count(2**64 - 1), {"@data-type": "count", "data": 2**64 - 1}),
    (-7, {"@data-type": "integer", "data": -7}),
    (1.0, {"@data-type": "real", "data": 1.0}),
    (-7.5, {"@data-type": "real", "data": -7.5}),
    ("héllo \"w\"", {"@data-type": "string", "data": "héllo \"w\""}),
    (codec.EnumValue("Notice::ACTION_LOG"), {"@data-type": "enum-value", "data": "Notice::ACTION_LOG"}),
    (ipaddress.ip_address("192.0.2.1"), {"@data-type": "address", "data": "192.0.2.1"}),
    (ipaddress.ip_address("2001:db8::1"), {"@data-type": "address", "data": "2001:db8::1"}),
    (ipaddress.ip_network("10.0.0.0/8"), {"@data-type": "subnet", "data": "10.0.0.0/8"}),
    (Port(443, "tcp"), {"@data-type": "port", "data": "443/tcp"}),
    (Port(53, "udp"), {"@data-type": "port", "data": "53/udp"}),
    (Port(8, "icmp"), {"@data-type": "port", "data": "8/icmp"}),
    (Port(0, "unknown"), {"@data-type": "port", "data": "0/?"}),
    (dt.datetime(2022, 4, 10, 7, 0, 0, 123000, tzinfo=UTC),
     {"@data-type": "timestamp", "data": "2022-04-10T07:00:00.123"}),
    (dt.timedelta(milliseconds=1500), {"@data-type": "timespan", "data": "1500ms"}),
    (dt.timedelta(microseconds=7), {"@data-type": "timespan", "data": "7us"}),
    (dt.timedelta(seconds=42), {"@data-type": "timespan", "data": "42s"}),
    (dt.timedelta(0), {"@data-type": "timespan", "data": "0s"}),
    ((codec.Count(42), 23), {"@data-type": "vector", "data": [{"@data-type": "count", "data": 42},
                                                              {"@data-type": "integer", "data": 23}]}),
    (frozenset({"foo"}), {"@data-type": "set", "data": [{"@data-type": "string", "data": "foo"}]}),
    ({"first-name": "John"}, {"@data-type": "table", "data": [
        {"key": {"@data-type": "string", "data": "first-name"},
         "value": {"@data-type": "string", "data": "John"}}]}),
]


@pytest.mark.parametrize("value,wire_form", CASES, ids=[c[1]["@data-type"] + str(i) for i, c in enumerate(CASES)])
def test_every_type_encodes_to_brokers_form_and_back(value, wire_form):
    assert codec.encode(value) == wire_form
    back = codec.decode(json.loads(json.dumps(codec.encode(value))))
    assert back == value and type(back) is type(value)


def test_nested_containers_round_trip_with_types_kept():
    value = {(codec.Count(1), "a"): frozenset({Port(80, "tcp"), ipaddress.ip_address("10.0.0.1")}),
             "v": (None, (1.5, False), dt.datetime(2024, 1, 1, tzinfo=UTC))}
    back = codec.decode(json.loads(json.dumps(codec.encode(value))))
    assert back == value
    key = next(k for k in back if isinstance(k, tuple))
    assert type(key[0]) is codec.Count


def test_real_is_always_a_json_number_with_a_point_and_count_is_unsigned():
    assert json.dumps(codec.encode(1.0)) == '{"@data-type": "real", "data": 1.0}'
    with pytest.raises(codec.CodecError):
        codec.encode(float("nan"))
    with pytest.raises(codec.CodecError):
        codec.Count(-1)
    with pytest.raises(codec.CodecError):
        codec.encode(dt.datetime(2024, 1, 1))  # naive: would be ambiguous


@pytest.mark.parametrize("bad", [
    {"@data-type": "count", "data": 1.0},       # Broker: a decimal point is an error
    {"@data-type": "count", "data": True},
    {"@data-type": "count", "data": -1},
    {"@data-type": "integer", "data": 1.5},
    {"@data-type": "real", "data": "1"},
    {"@data-type": "boolean", "data": 1},
    {"@data-type": "address", "data": "10.0.0.300"},
    {"@data-type": "port", "data": "70000/tcp"},
    {"@data-type": "port", "data": "80/sctp"},
    {"@data-type": "timestamp", "data": "yesterday"},
    {"@data-type": "timespan", "data": "5 fortnights"},
    {"@data-type": "vector", "data": {}},
    {"@data-type": "quaternion", "data": 1},
    {"data": 1},
])
def test_decode_rejects_values_broker_rejects(bad):
    with pytest.raises(codec.CodecError):
        codec.decode(bad)


def test_broker_timestamp_forms_parse_as_utc():
    want = dt.datetime(2022, 4, 10, 7, 0, tzinfo=UTC)
    for text in ("2022-04-10T07:00:00.000", "2022-04-10T07:00:00", "2022-04-10T07:00:00Z",
                 "2022-04-10T09:00:00+02:00"):
        assert codec.parse_timestamp(text) == want
    assert codec.timestamp_text(1649574000.5) == "2022-04-10T07:00:00.500"


# ------------------------------------------------------------ Zeek event envelope


def test_event_envelope_is_zeeks():
    data = codec.event_data("Multa::results", [codec.encode("x")])
    # zeek8-facts.md: [count 1, count 1, vector[name, vector[args]]]
    assert data["data"][0] == {"@data-type": "count", "data": 1}
    assert data["data"][1] == {"@data-type": "count", "data": 1}
    msg = wire.decode_message(json.dumps({"type": "data-message", "topic": "t", **data}))
    name, args = wire.split_event(msg.t, msg.data)
    assert name == "Multa::results" and args[0].data == "x"
    assert wire.to_plain(args) == [{"@data-type": "string", "data": "x"}]


def test_event_with_zeek_metadata_element_is_accepted():
    data = codec.event_data("E", [])
    data["data"][2]["data"].append({"@data-type": "vector", "data": []})  # Zeek 8 metadata slot
    msg = wire.decode_message(json.dumps({"type": "data-message", "topic": "t", **data}))
    assert wire.split_event(msg.t, msg.data) == ("E", [])


@pytest.mark.parametrize("data", [
    {"@data-type": "count", "data": 1},
    {"@data-type": "vector", "data": [{"@data-type": "count", "data": 2}, {"@data-type": "count", "data": 1},
                                      {"@data-type": "vector", "data": []}]},
    {"@data-type": "vector", "data": [1, 2, 3]},
])
def test_non_events_are_codec_errors(data):
    # msgspec refuses [1,2,3] while parsing (a vector must hold values); json lets it
    # through to split_event. Either way the message is skipped as malformed.
    with pytest.raises((codec.CodecError, wire.MessageError)):
        msg = wire.decode_message(json.dumps({"type": "data-message", "topic": "t", **data}))
        wire.split_event(msg.t, msg.data)


# ------------------------------------------------------------ Multa::flows in


def _parse(text: str, use_msgspec: bool, max_n: int = MAX_N) -> events.FlowsMessage:
    msg = wire.decode_message(text, use_msgspec=use_msgspec)
    name, args = wire.split_event(msg.t, msg.data)
    assert name == FLOWS_EVENT
    return events.flows_from_json(args, max_n)


DECODERS = [pytest.param(True, id="msgspec"), pytest.param(False, id="json")]


@pytest.mark.parametrize("use_msgspec", DECODERS)
def test_flows_round_trip_through_zeeks_wire_format(use_msgspec):
    if use_msgspec and wire.msgspec is None:
        pytest.skip("msgspec not installed")
    flows = [make_flow(i, n=1 + i % 20, proto="udp" if i % 3 else "tcp") for i in range(40)]
    flows.append(make_flow(99, n=5))
    flows[-1].key = type(flows[-1].key)("tcp", "2001:db8::5", 1, "2001:db8::6", 2, 1.5)
    text = flows_message("multa/flows", "worker-3", flows)
    got = _parse(text, use_msgspec)
    assert got.node == "worker-3" and not got.rejected
    for want, have in zip(flows, got.flows):
        assert have.uid == want.uid and have.key == want.key
        assert (have.sizes, have.dirs, have.iats) == (want.sizes, want.dirs, want.iats)
        assert all(type(x) is int for x in have.sizes) and all(type(d) is bool for d in have.dirs)


def test_flow_record_is_a_vector_of_fields_in_declaration_order():
    f = make_flow(1, n=2)
    rec = flow_record_json(f)
    types = [v["@data-type"] for v in rec["data"]]
    # Contract version 2: ctx last, Broker none when the flow has no host context.
    assert types == ["string", "address", "port", "address", "port", "timestamp", "vector", "vector", "vector",
                     "none"]
    assert rec["data"][9] == {"@data-type": "none", "data": {}}
    assert [v["@data-type"] for v in flow_record_json(f, version=1)["data"]] == types[:9]
    f.ctx = (1, 2, 3, 0, 1000, 7)
    assert flow_record_json(f)["data"][9] == _counts([1, 2, 3, 0, 1000, 7])
    assert rec["data"][6]["data"][0] == {"@data-type": "count", "data": f.sizes[0]}
    assert rec["data"][7]["data"][0] == {"@data-type": "boolean", "data": f.dirs[0]}
    assert rec["data"][5]["data"] == "2023-11-14T22:13:20.001"  # ms resolution, as Zeek writes time


def _with_field(i: int, value: dict) -> str:
    rec = flow_record_json(make_flow(1))
    rec["data"][i] = value
    good = flow_record_json(make_flow(2))
    from multa_broker.bench.fakezeek import flows_message_text

    return flows_message_text("multa/flows", "w", json.dumps(good) + "," + json.dumps(rec))


def _counts(xs, dtype="count"):
    return {"@data-type": "vector", "data": [{"@data-type": dtype, "data": x} for x in xs]}


@pytest.mark.parametrize("use_msgspec", DECODERS)
@pytest.mark.parametrize("field,value,why", [
    (0, {"@data-type": "count", "data": 5}, "uid must be string"),
    (0, {"@data-type": "string", "data": ""}, "non-empty"),
    (1, {"@data-type": "string", "data": "10.0.0.1"}, "orig_h must be address"),
    (1, {"@data-type": "address", "data": "10.0.0.999"}, "bad address"),
    (2, {"@data-type": "count", "data": 80}, "orig_p must be port"),
    (2, {"@data-type": "port", "data": "80/udp"}, "disagree"),
    (5, {"@data-type": "real", "data": 1.5}, "ts must be timestamp"),
    (6, _counts([60.0] * 20, "real"), "vector of count"),
    (6, _counts([10] + [60] * 19), "outside 20..65535"),
    (6, _counts([70000] + [60] * 19), "outside 20..65535"),
    (6, _counts([60] * 19), "lengths differ"),
    (6, _counts([60] * (MAX_N + 1)), "more than 64"),
    (6, {"@data-type": "vector", "data": []}, "no packets"),
    (7, _counts([1] * 20, "count"), "vector of boolean"),
    (8, _counts([5] + [0] * 19), "first packet's inter-arrival"),
    (8, _counts([0, -3] + [0] * 18, "integer"), "vector of count"),
])
def test_bad_flow_is_dropped_alone(use_msgspec, field, value, why):
    if use_msgspec and wire.msgspec is None:
        pytest.skip("msgspec not installed")
    got = _parse(_with_field(field, value), use_msgspec)
    assert [f.uid for f in got.flows] == ["Cf000002"]
    assert len(got.rejected) == 1 and why in got.rejected[0], got.rejected


def test_empty_flow_is_rejected():
    rec = flow_record_json(make_flow(1, n=1))
    for i in (6, 7, 8):
        rec["data"][i]["data"] = []
    from multa_broker.bench.fakezeek import flows_message_text

    got = _parse(flows_message_text("t", "w", json.dumps(rec)), True)
    assert not got.flows and "no packets" in got.rejected[0]


@pytest.mark.parametrize("n", [8, 11, 0])
def test_record_with_wrong_field_count_is_rejected(n):
    rec = flow_record_json(make_flow(1))
    rec["data"] = (rec["data"] + [rec["data"][0]])[:n]
    from multa_broker.bench.fakezeek import flows_message_text

    got = _parse(flows_message_text("t", "w", json.dumps(rec)), True)
    assert f"{n} fields, expected 10 (or 9, contract version 1)" in got.rejected[0]
    assert got.versions == {0: 1} and got.rejected_context == 0


@pytest.mark.parametrize("args", [
    [],
    [{"@data-type": "count", "data": 1}, {"@data-type": "vector", "data": []}],
    [{"@data-type": "string", "data": "w"}, {"@data-type": "string", "data": "x"}],
])
def test_wrong_event_arguments_fail_the_whole_message(args):
    data = codec.event_data(FLOWS_EVENT, args)
    msg = wire.decode_message(json.dumps({"type": "data-message", "topic": "t", **data}))
    _, a = wire.split_event(msg.t, msg.data)
    with pytest.raises(codec.CodecError):
        events.flows_from_json(a)


def _from_values(args):
    """What the native transport does with Broker's values: codec values -> Values -> the one decoder."""
    return events.flows_from_json([wire.from_codec(v) for v in args])


def test_codec_values_take_the_same_decoder():
    flows = [make_flow(i, n=3 + i) for i in range(5)]
    flows[0].key = type(flows[0].key)("tcp", "2001:db8::5", 1, "2001:db8::6", 2, 1700000000.123456)
    got = _from_values(flows_event_values("w", flows))
    assert got.node == "w" and not got.rejected
    # Timestamps keep their microseconds (the JSON wire's text has milliseconds only).
    assert [(f.uid, f.key, f.sizes, f.dirs, f.iats) for f in got.flows] == \
        [(f.uid, f.key, f.sizes, f.dirs, f.iats) for f in flows]
    bad = list(flow_values(make_flow(7)))
    bad[6] = tuple(int(x) for x in bad[6])  # integers, not counts: Zeek's types must match
    got = _from_values(["w", (tuple(bad),)])
    assert not got.flows and "vector of count" in got.rejected[0]


def test_codec_values_become_the_values_a_parsed_message_holds():
    value = ("s", codec.Count(3), -2, 1.5, True, None, codec.EnumValue("A::B"), Port(53, "unknown"),
             ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network("10.0.0.0/8"),
             dt.timedelta(milliseconds=1500), frozenset({codec.Count(1)}), {"k": (codec.Count(2),)},
             dt.datetime(2022, 4, 10, 7, 0, 0, 250000, tzinfo=UTC))
    assert codec.decode(wire.to_plain(wire.from_codec(value))) == value


# ------------------------------------------------------------ Multa::results out


def test_results_message_has_exact_broker_types():
    rs = [Result("C1", "multa/1", ("service", "encrypted"), ("tls", "encrypted"), (1.0, 0.25)),
          Result('C"2', "multa/1", ("service",), ("unknown",), (0.0,))]
    text = events.results_message_text("multa/results", rs)
    obj = json.loads(text)
    assert obj["type"] == "data-message" and obj["topic"] == "multa/results"
    msg = wire.decode_message(text)
    name, args = wire.split_event(msg.t, msg.data)
    args = wire.to_plain(args)
    assert name == RESULTS_EVENT
    rec = args[0]["data"][0]["data"]
    assert [v["@data-type"] for v in rec] == ["string", "string", "vector", "vector", "vector"]
    assert rec[4]["data"][0] == {"@data-type": "real", "data": 1.0}
    assert '"data":1.000000}' in text  # six decimals like Zeek; never a bare 1 (that is an integer)
    assert codec.decode({"@data-type": "vector", "data": args}) == ((
        ("C1", "multa/1", ("service", "encrypted"), ("tls", "encrypted"), (1.0, 0.25)),
        ('C"2', "multa/1", ("service",), ("unknown",), (0.0,))),)
    msg = wire.decode_message(text)
    assert _check_results(msg.t, msg.data) == (RESULTS_EVENT, rs)


def test_packed_results_message_is_two_values_with_the_results_as_json():
    rs = [Result("C1", "multa/1", ("service", "encrypted"), ("tls", "encrypted"), (1.0, 0.123456789)),
          Result('C"2\u00e9', "multa/1", ("service",), ("unknown",), (0.0,))]
    text = events.packed_results_message_text("multa/results/w1", rs)
    obj = json.loads(text)
    assert obj["type"] == "data-message" and obj["topic"] == "multa/results/w1"
    msg = wire.decode_message(text)
    name, args = wire.split_event(msg.t, msg.data)
    assert name == PACKED_RESULTS_EVENT
    assert [(a.t, a.data) for a in args][0] == ("count", PACKED_RESULT_VERSION) and args[1].t == "string"
    # The JSON text Zeek's from_json reads into a vector of Multa::Result: field names as keys,
    # scores rounded to six decimals as the typed encoding sends them.
    assert json.loads(args[1].data) == [
        {"uid": "C1", "model": "multa/1", "tasks": ["service", "encrypted"], "labels": ["tls", "encrypted"],
         "scores": [1.0, 0.123457]},
        {"uid": 'C"2\u00e9', "model": "multa/1", "tasks": ["service"], "labels": ["unknown"], "scores": [0.0]}]
    typed = [Result(r.uid, r.model, r.tasks, r.labels, tuple(round(s, 6) for s in r.scores)) for r in rs]
    assert _check_results(msg.t, msg.data) == (PACKED_RESULTS_EVENT, typed)
    # A fraction of the typed encoding's bytes for the default model's four tasks.
    four = [Result(f"C{i:017d}", "multa-default/9", ("service", "encrypted", "tunnel", "threat"),
                   ("web", "encrypted", "none", "benign"), (0.98, 0.99, 1.0, 0.75)) for i in range(100)]
    assert len(events.packed_results_message_text("t", four)) < 0.4 * len(events.results_message_text("t", four))


@pytest.mark.parametrize("text", [
    '[{"uid":"C1","model":"m","tasks":["a"],"labels":["x"]}]',                 # a field missing
    '[{"uid":"C1","model":"m","tasks":["a"],"labels":["x"],"scores":["1"]}]',  # a score as a string
    '[{"uid":7,"model":"m","tasks":["a"],"labels":["x"],"scores":[1]}]',       # uid not a string
    '{"uid":"C1"}', "[", "",
])
def test_fake_zeek_refuses_packed_results_from_json_would_refuse(text):
    obj = json.loads(events.packed_results_message_text("t", []))
    obj["data"][2]["data"][1]["data"][1]["data"] = text
    msg = wire.decode_message(json.dumps(obj))
    with pytest.raises(codec.CodecError):
        _check_results(msg.t, msg.data)


def test_result_checks():
    with pytest.raises(ValueError):
        events.check_result(Result("C", "m", ("a",), ("x",), (float("nan"),)))
    with pytest.raises(ValueError):
        events.check_result(Result("C", "m", ("a", "b"), ("x",), (0.5,)))


def test_wire_message_errors():
    for text in ("not json", "[1,2]", '{"topic":"x"}', b"\xff\xfe"):
        with pytest.raises(wire.MessageError):
            wire.decode_message(text)
    m = wire.decode_message('{"type":"error","code":"deserialization_failed","context":"bad"}')
    assert (m.type, m.code, m.context) == ("error", "deserialization_failed", "bad")


def test_flow_longer_than_the_limit_is_rejected():
    msg = wire.decode_message(flows_message("t", "w", [make_flow(1, n=30)]))
    _, args = wire.split_event(msg.t, msg.data)
    with pytest.raises(FlowError, match="more than 20"):
        events.flow_from_json(args[1].data[0], 20)
    assert events.flow_from_json(args[1].data[0], MAX_N).packets == 30


@pytest.mark.parametrize("field,value", [
    (4, {"@data-type": "vector", "data": [{"@data-type": "count", "data": 1}]}),     # score as count
    (4, {"@data-type": "vector", "data": [{"@data-type": "integer", "data": 1}]}),   # score as integer
    (2, {"@data-type": "string", "data": "service"}),                                # tasks not a vector
    (0, {"@data-type": "count", "data": 7}),                                         # uid not a string
])
def test_fake_zeek_refuses_results_zeek_would_refuse(field, value):
    """The test double must catch what real Zeek rejects, or the service tests prove nothing."""
    text = events.results_message_text("multa/results", [Result("C1", "m/1", ("service",), ("tls",), (1.0,))])
    obj = json.loads(text)
    obj["data"][2]["data"][1]["data"][0]["data"][0]["data"][field] = value
    msg = wire.decode_message(json.dumps(obj))
    with pytest.raises(codec.CodecError):
        _check_results(msg.t, msg.data)


# ------------------------------------------------------------ the typed fast path


def _both_paths(text: str, max_n: int = MAX_N):
    fast = wire.decode_flows(text)
    msg = wire.decode_message(text)
    _, args = wire.split_event(msg.t, msg.data)
    return fast, events.flows_from_json(args, max_n)


def _key(m):
    return [(f.uid, f.key, f.sizes, f.dirs, f.iats, f.ctx) for f in m.flows]


@pytest.mark.skipif(wire.msgspec is None, reason="msgspec not installed")
def test_typed_fast_path_equals_generic_path():
    flows = [make_flow(i, n=1 + i % 20, proto=("tcp", "udp", "icmp")[i % 3]) for i in range(60)]
    fast, generic = _both_paths(flows_message("multa/flows", "w-1", flows))
    assert fast is not None and fast.topic == "multa/flows"
    got = events.flows_from_wire(fast)
    assert got.node == generic.node == "w-1" and _key(got) == _key(generic) and not got.rejected
    # Right types, wrong values: the fast path still takes the message and rejects the same flows.
    bad = [make_flow(1), make_flow(2, first=10), make_flow(3), make_flow(4, n=30)]
    bad[2].iats[0] = 7
    text = flows_message("multa/flows", "w", bad)
    fast, generic = _both_paths(text, max_n=20)
    got = events.flows_from_wire(fast, 20)
    assert _key(got) == _key(generic) == _key(events.FlowsMessage("w", [bad[0]]))
    assert got.rejected == generic.rejected and len(got.rejected) == 3


@pytest.mark.skipif(wire.msgspec is None, reason="msgspec not installed")
@pytest.mark.parametrize("field,value", [
    (6, _counts([60.0] * 20, "real")),
    (7, _counts([1] * 20, "count")),
    (1, {"@data-type": "string", "data": "10.0.0.1"}),
    (0, {"@data-type": "count", "data": 5}),
])
def test_wrong_types_leave_the_fast_path(field, value):
    """A type error fails the typed schema, so the generic path names the bad flow."""
    assert wire.decode_flows(_with_field(field, value)) is None
    other = json.dumps({"type": "data-message", "topic": "t", **codec.event_data("Other::event", [])})
    assert wire.decode_flows(other) is None


# ------------------------------------------------------------ issue 16: hostile messages


def _transport_parse(text: str, use_msgspec: bool):
    """What the bridge does with one message: the transport's parse, then the flows' parser."""
    from multa_broker.bridge.config import WebSocketConfig
    from multa_broker.bridge.websocket import WebSocketTransport

    inbound = WebSocketTransport(WebSocketConfig(use_msgspec=use_msgspec)).parse(text)
    if inbound.kind != "event":
        return inbound, None
    return inbound, inbound.parse_flows(inbound.args, MAX_N)


def _nested(depth: int) -> str:
    inner = '{"@data-type":"vector","data":[' * depth + '{"@data-type":"count","data":1}' + "]}" * depth
    from multa_broker.bench.fakezeek import flows_message_text

    return flows_message_text("multa/flows", "w", inner)


@pytest.mark.parametrize("use_msgspec", DECODERS)
@pytest.mark.parametrize("depth", [500, 5000])
def test_deeply_nested_message_is_refused_not_raised(use_msgspec, depth):
    """Issue 16 (1): ~500 nested vectors (17 KB) raised RecursionError in both parsers."""
    text = _nested(depth)
    inbound, _ = _transport_parse(text, use_msgspec)
    assert inbound.kind == "malformed" and inbound.code == "too_deep", inbound
    with pytest.raises(wire.TooDeep):
        wire.decode_message(text, use_msgspec=use_msgspec)


@pytest.mark.parametrize("use_msgspec", DECODERS)
def test_nesting_within_the_bound_still_parses(use_msgspec):
    # 40 levels below the flows vector: parsed, and the one bad record is dropped alone.
    inbound, fm = _transport_parse(_nested(40), use_msgspec)
    assert inbound.kind == "event" and fm is not None
    assert not fm.flows and len(fm.rejected) == 1


def test_depth_check_ignores_unbalanced_text_and_counts_levels():
    wire.check_depth(b"[" * 1000)  # unbalanced: for the parser to reject
    wire.check_depth("[" * 64 + "]" * 64)
    with pytest.raises(wire.TooDeep):
        wire.check_depth("[" * 65 + "]" * 65)
    with pytest.raises(wire.TooDeep):
        wire.check_depth('{"a":' * 65 + "1" + "}" * 65)


def _message_with(recs: list) -> str:
    from multa_broker.bench.fakezeek import flows_message_text

    return flows_message_text("multa/flows", "w", ",".join(json.dumps(r) for r in recs))


@pytest.mark.parametrize("use_msgspec", DECODERS)
@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_out_of_range_timestamp_drops_that_flow_only(use_msgspec, ts):
    """Issue 16 (4): OverflowError escaped the per-flow check and lost the whole message."""
    recs = [flow_record_json(make_flow(i)) for i in range(3)]
    recs[1]["data"][5]["data"] = ts
    inbound, fm = _transport_parse(_message_with(recs), use_msgspec)
    assert [f.uid for f in fm.flows] == ["Cf000000", "Cf000002"]
    assert len(fm.rejected) == 1 and "Cf000001" in fm.rejected[0] and "ts" in fm.rejected[0]


@pytest.mark.parametrize("use_msgspec", DECODERS)
def test_counts_above_64_bits_are_rejected(use_msgspec):
    """Issue 16 (9): a count is unsigned 64-bit; 2**64 was accepted as an iat."""
    recs = [flow_record_json(make_flow(i)) for i in range(3)]
    recs[1]["data"][8]["data"][1]["data"] = 2**64
    recs[2]["data"][8]["data"][1]["data"] = 2**64 - 1  # the largest count is legal
    inbound, fm = _transport_parse(_message_with(recs), use_msgspec)
    assert [f.uid for f in fm.flows] == ["Cf000000", "Cf000002"]
    assert len(fm.rejected) == 1 and "Cf000001" in fm.rejected[0] and "2**64-1" in fm.rejected[0]
    # The same through the generic codec and the native transport's values.
    with pytest.raises(codec.CodecError):
        codec.decode({"@data-type": "count", "data": 2**64})


# ------------------------------------------------------------ issue 15: host context (contract v2 and v1)


def _ctx_flows(count: int = 6) -> list:
    flows = [make_flow(i, n=3 + i % 5, proto=("tcp", "udp", "icmp")[i % 3]) for i in range(count)]
    for i, f in enumerate(flows):
        f.ctx = None if i % 3 == 2 else (i, 2 * i, 1, 0, 1000 - i, 3)  # some without context
    return flows


@pytest.mark.parametrize("use_msgspec", DECODERS)
@pytest.mark.parametrize("version", [2, 1])
def test_contract_v2_and_v1_records_decode_on_every_path(use_msgspec, version):
    if use_msgspec and wire.msgspec is None:
        pytest.skip("msgspec not installed")
    flows = _ctx_flows()
    text = flows_message("multa/flows", "w", flows, version=version)
    inbound, fm = _transport_parse(text, use_msgspec)
    want = [f.ctx if version == 2 else None for f in flows]
    assert not fm.rejected and [f.ctx for f in fm.flows] == want
    assert fm.versions == {version: len(flows)} and fm.rejected_context == 0
    assert _key(fm) == _key(_parse(text, use_msgspec))  # the generic path gives the same
    assert all(type(c) is int for f in fm.flows if f.ctx for c in f.ctx)
    # The native transport's values take the same decoder.
    native = _from_values(flows_event_values("w", flows, version=version))
    assert [f.ctx for f in native.flows] == want and native.versions == {version: len(flows)}


@pytest.mark.skipif(wire.msgspec is None, reason="msgspec not installed")
def test_typed_fast_path_takes_v2_and_v1_and_mixed_falls_back():
    flows = _ctx_flows()
    for version in (2, 1):
        fast = wire.decode_flows(flows_message("multa/flows", "w", flows, version=version))
        assert fast is not None, version
        assert events.flows_from_wire(fast).versions == {version: len(flows)}
    # One message with records of both versions (never sent by one Zeek): the generic path reads each.
    recs = [flow_record_json(f, version=1 + i % 2) for i, f in enumerate(flows)]
    text = _message_with(recs)
    assert wire.decode_flows(text) is None
    inbound, fm = _transport_parse(text, True)
    assert not fm.rejected and fm.versions == {1: 3, 2: 3}
    assert [f.ctx for f in fm.flows] == [f.ctx if i % 2 else None for i, f in enumerate(flows)]


def _ctx_field(values: list, dtype: str = "count") -> dict:
    return {"@data-type": "vector", "data": [{"@data-type": dtype, "data": v} for v in values]}


BAD_CTX = [
    pytest.param(_ctx_field([1, 2, 3, 4, 5]), "5 numbers", id="five"),
    pytest.param(_ctx_field([1] * 7), "7 numbers", id="seven"),
    pytest.param(_ctx_field([]), "0 numbers", id="empty"),
    pytest.param(_ctx_field([0] * 100_000), "100000 numbers", id="huge"),
    pytest.param(_ctx_field([1, 2, 3, 4, 5, 1001]), "1001", id="above-max"),
    pytest.param(_ctx_field([1, 2, 3, 4, 5, 2**64 - 1]), "not a count in 0..1000", id="max-count"),
    pytest.param(_ctx_field([1, 2, -3, 4, 5, 6]), "-3", id="negative-count"),
    pytest.param(_ctx_field([1, 2, -3, 4, 5, 6], "integer"), "vector of count", id="integers"),
    pytest.param(_ctx_field([1.0] * 6, "real"), "vector of count", id="reals"),
    pytest.param(_ctx_field([True] * 6, "boolean"), "vector of count", id="booleans"),
    pytest.param(_ctx_field(["1"] * 6, "string"), "vector of count", id="strings"),
    pytest.param({"@data-type": "count", "data": 6}, "vector of count or none", id="scalar"),
    pytest.param({"@data-type": "string", "data": "none"}, "vector of count or none", id="string"),
    pytest.param({"@data-type": "vector", "data": [_ctx_field([1])] * 6}, "vector of count", id="nested"),
    pytest.param({"@data-type": "none", "data": 5}, "none with data", id="none-with-data"),
]


@pytest.mark.parametrize("use_msgspec", DECODERS)
@pytest.mark.parametrize("value,why", BAD_CTX)
def test_bad_context_drops_that_flow_alone_and_is_counted(use_msgspec, value, why):
    if use_msgspec and wire.msgspec is None:
        pytest.skip("msgspec not installed")
    flows = _ctx_flows(3)
    recs = [flow_record_json(f) for f in flows]
    recs[1]["data"][9] = value
    inbound, fm = _transport_parse(_message_with(recs), use_msgspec)
    assert [f.uid for f in fm.flows] == [flows[0].uid, flows[2].uid]
    assert [f.ctx for f in fm.flows] == [flows[0].ctx, flows[2].ctx]
    assert len(fm.rejected) == 1 and fm.rejected_context == 1
    assert flows[1].uid in fm.rejected[0] and "ctx" in fm.rejected[0] and why in fm.rejected[0], fm.rejected
    assert fm.versions == {2: 3}


def test_bad_packets_and_bad_context_count_as_invalid_not_context():
    recs = [flow_record_json(f) for f in _ctx_flows(2)]
    recs[0]["data"][9] = _ctx_field([1])
    recs[0]["data"][6]["data"][0]["data"] = 5  # size below 20
    inbound, fm = _transport_parse(_message_with(recs), True)
    assert len(fm.flows) == 1 and len(fm.rejected) == 1 and fm.rejected_context == 0


def test_bad_context_from_native_values_is_rejected():
    flows = _ctx_flows(2)
    vals = flows_event_values("w", flows)
    bad = list(vals[1][0])
    bad[9] = tuple(codec.Count(v) for v in (1, 2, 3, 4, 5, 1001))
    got = _from_values(["w", (tuple(bad), vals[1][1])])
    assert [f.uid for f in got.flows] == [flows[1].uid] and got.rejected_context == 1


def _mutations(rng, value, depth=0):
    """Random shapes a broken peer might send in place of a Broker value."""
    choices = [
        lambda: {"@data-type": "none", "data": {}},
        lambda: {"@data-type": rng.choice(["count", "integer", "real", "boolean", "string", "vector", "none",
                                           "port", "", "x"]),
                 "data": rng.choice([0, -1, 1001, 2**64, 1.5, True, "1", None, [], {}, [1, 2]])},
        lambda: _ctx_field([rng.choice([0, 5, 1000, 1001, -1, 2**64 - 1]) for _ in range(rng.randrange(0, 9))],
                           rng.choice(["count", "count", "integer", "real"])),
        lambda: rng.choice([None, 1, "x", [], {}, [1, 2, 3]]),
        lambda: {"data": [value]},
        lambda: {"@data-type": "vector", "data": [_mutations(rng, value, depth + 1) for _ in range(6)]}
        if depth < 3 else value,
        lambda: value,
    ]
    return rng.choice(choices)()


@pytest.mark.parametrize("use_msgspec", DECODERS)
def test_malformed_record_shapes_never_crash(use_msgspec):
    """Fuzz-ish: mutate fields (ctx most often), drop or add fields; every record ends
    either as a flow or as one rejected line, and nothing raises."""
    import random

    rng = random.Random(15)
    base = [flow_record_json(f) for f in _ctx_flows(6)]
    for _ in range(300):
        recs = json.loads(json.dumps(base))
        for r in recs:
            roll = rng.random()
            if roll < 0.5:
                r["data"][9] = _mutations(rng, r["data"][9])
            elif roll < 0.7:
                i = rng.randrange(10)
                r["data"][i] = _mutations(rng, r["data"][i])
            elif roll < 0.8:
                del r["data"][rng.randrange(len(r["data"])):]
            elif roll < 0.85:
                r["data"].append(_mutations(rng, r["data"][0]))
        inbound, fm = _transport_parse(_message_with(recs), use_msgspec)
        if fm is None:
            assert inbound.kind == "malformed"
            continue
        assert len(fm.flows) + len(fm.rejected) == len(recs)
        assert sum(fm.versions.values()) == len(recs)
        for f in fm.flows:
            assert f.ctx is None or (len(f.ctx) == 6 and all(type(c) is int and 0 <= c <= 1000 for c in f.ctx))
