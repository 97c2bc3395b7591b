"""The packed flow encoding (issue 18): ``Multa::packed_flows(node, version, flows)``.

Each ``Multa::PackedFlow`` carries a flow's sequences and host context in one
string, ``[sizes]|[dirs]|[iats]`` and, with context, ``|[ctx]``
(protocol.pack_sequences, Zeek's ``cat_sep("|", "", ...)``). These tests pin
the round trip (typed and packed give the same Flow, through the typed msgspec
fast path and the generic path alike) and that every malformed packing drops
its flow alone with one clear, counted reason (``bad_packing``, or
``bad_context`` / ``invalid`` as for typed records), never an exception.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from multa_broker.bench.fakezeek import (FakeZeek, flow_record_json, flows_message, flows_message_text,
                                         packed_flows_event_values)
from multa_broker.bridge import codec, events, native, packed, wire
from multa_broker.flow import Flow, FlowKey
from multa_broker.protocol import (MAX_PACKED_CHARS, PACKED_FLOW_FIELDS, PACKED_FLOW_VERSION, PACKED_FLOWS_EVENT,
                                   PACKED_RESULTS_EVENT, RESULTS_EVENT, pack_sequences)

from support.bridge import bridge_config, make_flow, running, wait_until, write_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _flows() -> list[Flow]:
    flows = [make_flow(i, n=1 + i % 64, proto=("tcp", "udp")[i % 2]) for i in range(40)]
    for i, f in enumerate(flows):
        f.ctx = None if i % 3 == 0 else (i, 1, 2, 0, 1000, 1)
    # Large gaps (a count over 32 bits) and IPv6.
    flows.append(Flow(FlowKey("tcp", "2001:db8::1", 5000, "2001:db8::2", 443, 1.7e9),
                      [60, 1500], [True, False], [0, 2**40], "Cbig", (0, 0, 0, 0, 0, 0)))
    return flows


def _parse(text: str):
    """Both decoders of one message: the typed fast path and the generic Value path."""
    fast = wire.decode_flows(text)
    msg = wire.decode_message(text, use_msgspec=False)
    name, args = wire.split_event(msg.t, msg.data)
    generic = packed.flows_parser(name)(args)
    if fast is None:
        return None, generic
    parse = packed.packed_flows_from_wire if fast.__class__ is wire.PackedFlowsWire else events.flows_from_wire
    return parse(fast), generic


def _seqs(fm) -> list[tuple]:
    return [(f.uid, f.key, f.sizes, f.dirs, f.iats, f.ctx) for f in fm.flows]


def test_pack_sequences_is_zeeks_rendering():
    assert pack_sequences([60, 60, 52], [True, False, True], [0, 25000, 310]) == \
        "[60, 60, 52]|[T, F, T]|[0, 25000, 310]"
    assert pack_sequences([60], [False], [0], (4, 2, 3, 0, 0, 0)) == "[60]|[F]|[0]|[4, 2, 3, 0, 0, 0]"
    assert [n for n, _ in PACKED_FLOW_FIELDS] == ["uid", "orig_h", "orig_p", "resp_h", "resp_p", "ts", "packed"]


def test_round_trip_packed_equals_typed_on_every_path():
    flows = _flows()
    typed_fast, typed_generic = _parse(flows_message("multa/flows", "w1", flows))
    packed_fast, packed_generic = _parse(flows_message("multa/flows", "w1", flows, encoding="packed"))
    assert packed_fast is not None and packed_fast.encoding == "packed" and typed_fast.encoding == "typed"
    want = [(f.uid, f.key, f.sizes, f.dirs, f.iats, None if f.ctx is None else tuple(f.ctx)) for f in flows]
    for fm in (typed_fast, typed_generic, packed_fast, packed_generic):
        assert not fm.rejected, fm.rejected[:3]
        assert _seqs(fm) == want
    # Fewer bytes: one string instead of ~60 tagged values per flow.
    one = flows[19]  # 20 packets
    assert len(json.dumps(flow_record_json(one, encoding="packed"))) * 3 < len(json.dumps(flow_record_json(one)))


def test_unpack_sequences_round_trip_and_pure_python_path_agree():
    for f in _flows():
        text = pack_sequences(f.sizes, f.dirs, f.iats, f.ctx)
        sizes, dirs, iats, ctx = packed.unpack_sequences(text)
        assert (sizes, dirs, iats, ctx) == (f.sizes, f.dirs, f.iats, None if f.ctx is None else tuple(f.ctx))
        # The fallback parser (no msgspec, or the error path) reads the same.
        parts = text.split("|")
        assert packed._unpack_counts_py(parts[0], "sizes", 64) == f.sizes
        assert packed._unpack_bools_py(parts[1], 64) == f.dirs
        assert packed._unpack_counts_py(parts[2], "iats", 64) == f.iats


GOOD = "[60, 52]|[T, F]|[0, 310]"

# (packed string, drop reason, words of the message)
MALFORMED = [
    ("[60, 52]|[T, F]", "bad_packing", "2 sections"),
    ("[60, 52]|[T, F]|[0, 310]|[1, 1, 1, 1, 1, 1]|[1]", "bad_packing", "5 sections"),
    ("", "bad_packing", "1 sections"),
    ("60, 52|[T, F]|[0, 310]", "bad_packing", "is not [n, n, ...]"),
    ("[60, x]|[T, F]|[0, 310]", "bad_packing", "other than decimal digits"),
    ("[60, 52]|[T, F]|[0, 3.5]", "bad_packing", "other than decimal digits"),
    ("[60, -52]|[T, F]|[0, 310]", "bad_packing", "negative"),
    ("[60, 52]|[T, F]|[0, -1]", "bad_packing", "negative"),
    ("[60, ]|[T, F]|[0, 310]", "bad_packing", "empty element"),
    ("[60, 52]|[T, X]|[0, 310]", "bad_packing", "other than T and F"),
    ("[60, 52]|[true, false]|[0, 310]", "bad_packing", "other than T and F"),
    ("[60, 52]|[T]|[0, 310]", "bad_packing", "differ in length"),
    ("[60, 52, 52]|[T, F, T]|[0, 310]", "bad_packing", "differ in length"),
    ("[" + ", ".join(["60"] * 65) + "]|[" + ", ".join(["T"] * 65) + "]|[" + ", ".join(["0"] * 65) + "]",
     "bad_packing", "more than 64"),
    ("[60]|[T]|[" + "9" * (MAX_PACKED_CHARS) + "]", "bad_packing", "characters"),
    ("[60, 52]|[T, F]|[0, 18446744073709551616]", "bad_packing", "outside 0..2**64-1"),
    ("[\u0661\u0662]|[T]|[0]", "bad_packing", "other than decimal digits"),  # Arabic-Indic digits
    ("[60, 52]|[T, F]|[0, 310]|[1, 2, 3]", "bad_context", "3 numbers, not 6"),
    ("[60, 52]|[T, F]|[0, 310]|[1, 2, 3, 4, 5, 6, 7]", "bad_context", "7 numbers, not 6"),
    ("[60, 52]|[T, F]|[0, 310]|[1, 1, 1, 1, 1001, 1]", "bad_context", "1001"),
    ("[60, 52]|[T, F]|[0, 310]|[1, 1, x, 1, 1, 1]", "bad_packing", "ctx"),
    ("[60, 52]|[T, F]|[0, 310]|[]", "bad_packing", "ctx"),
    ("[10, 52]|[T, F]|[0, 310]", "invalid", "size"),  # well packed, but not a valid flow
    ("[60, 52]|[T, F]|[5, 310]|[1, 1, 1, 1, 1001, 1]", "invalid", ""),  # bad in both: invalid
]


def _packed_record(packed, uid="Cbad"):
    rec = flow_record_json(make_flow(1), encoding="packed")
    rec["data"][0]["data"] = uid
    rec["data"][6] = {"@data-type": "string", "data": packed}
    return rec


def _reason(fm) -> str:
    if fm.rejected_packing:
        return "bad_packing"
    if fm.rejected_context:
        return "bad_context"
    return "invalid"


@pytest.mark.parametrize("packed,reason,words", MALFORMED)
def test_malformed_packing_drops_that_flow_alone_with_a_clear_reason(packed, reason, words):
    good = flow_record_json(make_flow(2), encoding="packed")
    recs = ",".join(json.dumps(r) for r in [good, _packed_record(packed), good])
    text = flows_message_text("multa/flows", "w1", recs, "packed")
    for fm in _parse(text):
        if fm is None:
            continue
        assert len(fm.flows) == 2 and len(fm.rejected) == 1, fm.rejected
        assert _reason(fm) == reason, fm.rejected
        assert fm.rejected[0].startswith("flow Cbad: ") and words in fm.rejected[0], fm.rejected[0]
        assert len(fm.rejected[0]) <= 300


def test_packed_field_of_the_wrong_type_and_wrong_record_shapes_are_dropped_alone():
    good = flow_record_json(make_flow(2), encoding="packed")
    as_count = _packed_record("x")
    as_count["data"][6] = {"@data-type": "count", "data": 5}
    short = _packed_record(GOOD)
    del short["data"][6]
    typed = flow_record_json(make_flow(3))  # a typed record inside a packed event
    recs = ",".join(json.dumps(r) for r in [good, as_count, short, typed])
    fast, generic = _parse(flows_message_text("multa/flows", "w1", recs, "packed"))
    assert fast is None  # not the exact shape: the generic path decides, per record
    assert len(generic.flows) == 1 and len(generic.rejected) == 3
    assert "field packed must be string" in generic.rejected[0]
    assert "7" in generic.rejected[1] and "fields" in generic.rejected[1]


def _with_version(text: str, version: int) -> str:
    mark = '{"@data-type":"count","data":%d},{"@data-type":"vector","data":[{"@data-type":"vector"'
    assert mark % PACKED_FLOW_VERSION in text
    return text.replace(mark % PACKED_FLOW_VERSION, mark % version, 1)


def test_an_unknown_packed_version_drops_every_flow_as_bad_packing():
    flows = [make_flow(i) for i in range(3)]
    text = _with_version(flows_message("multa/flows", "w1", flows, encoding="packed"), 3)
    for fm in _parse(text):
        assert not fm.flows and fm.rejected_packing == 3
        assert "version 3" in fm.rejected[0] and "reads 1, 2" in fm.rejected[0]


def test_version_2_asks_for_packed_results_and_version_1_does_not():
    flows = [make_flow(i) for i in range(3)]
    text = flows_message("multa/flows", "w1", flows, encoding="packed")
    for version, answer in ((2, True), (1, False)):
        for fm in _parse(_with_version(text, version)):
            assert len(fm.flows) == 3 and fm.packed_results is answer
    for fm in _parse(flows_message("multa/flows", "w1", flows, encoding="typed")):
        assert len(fm.flows) == 3 and fm.packed_results is False


def test_bad_event_arguments_are_a_codec_error():
    v = wire.from_codec
    with pytest.raises(codec.CodecError, match="3 arguments"):
        packed.packed_flows_from_json([v("w1"), v(())])
    with pytest.raises(codec.CodecError, match="version must be a count"):
        packed.packed_flows_from_json([v("w1"), v("1"), v(())])


def test_native_transport_reads_packed_flows():
    """Broker's native values (strings, Count) go through the same decoder."""
    flows = _flows()[:5]
    args = [wire.from_codec(x) for x in packed_flows_event_values("w1", flows)]
    fm = packed.packed_flows_from_json(args)
    assert not fm.rejected and [f.sizes for f in fm.flows] == [f.sizes for f in flows]
    assert native._parse_flows(None, PACKED_FLOWS_EVENT).__name__ == "parse"


def test_service_counts_packed_flows_and_bad_packing(tmp_path):
    model = write_tiny_model(tmp_path / "store" / "tiny" / "1")

    async def main():
        zeek = await FakeZeek().start()
        flows = [make_flow(i) for i in range(20)]
        async with running(bridge_config(zeek.url, model)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows(flows[:10], encoding="packed")
            await zeek.send_flows(flows[10:])
            recs = ",".join(json.dumps(_packed_record(p, f"Cbad{i}"))
                            for i, (p, _, _) in enumerate(MALFORMED))
            await zeek.send_text("multa/flows", flows_message_text("multa/flows", "w1", recs, "packed"))
            await wait_until(lambda: len(zeek.results()) == 20, what="20 results")
            await asyncio.sleep(0.05)
            m = svc.metrics
            n_bad = {r: sum(1 for _, why, _ in MALFORMED if why == r) for r in ("bad_packing", "bad_context",
                                                                              "invalid")}
            assert m.value("multa_bridge_flows_in_total") == 20 + len(MALFORMED)
            assert m.value("multa_bridge_flows_encoding_total", encoding="packed") == 10 + len(MALFORMED)
            assert m.value("multa_bridge_flows_encoding_total", encoding="typed") == 10
            for reason, n in n_bad.items():
                assert m.dropped(reason) == n, (reason, m.summary())
            assert m.value("multa_bridge_flows_in_total") == m.value("multa_bridge_flows_out_total") + m.dropped()
        await zeek.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_service_answers_each_node_in_the_encoding_it_reads(tmp_path):
    """Packed flows of version 2 get Multa::packed_results, version 1 and typed flows get
    Multa::results: the same verdicts either way (scores to six decimals)."""
    model = write_tiny_model(tmp_path / "store" / "tiny" / "1")

    async def main():
        zeek = await FakeZeek().start()
        flows = [make_flow(i) for i in range(6)]
        async with running(bridge_config(zeek.url, model, topics__per_node=True)) as svc:
            await zeek.wait_subscribed()
            await zeek.send_flows(flows[:2], node="new", encoding="packed")
            await zeek.send_flows(flows[2:4], node="old", encoding="packed", packed_version=1)
            await zeek.send_flows(flows[4:], node="typed")
            await zeek.send_flows(flows[4:], node="again", encoding="packed")
            await wait_until(lambda: len(zeek.results()) == 8, what="8 results")
            assert svc.metrics.value("multa_bridge_flows_out_total") == 8
        await zeek.stop()
        return zeek.received

    received = asyncio.run(asyncio.wait_for(main(), 60))
    events_by_node: dict = {}
    results_by_node: dict = {}
    for rec in received:
        node = rec.topic.rsplit("/", 1)[1]
        events_by_node.setdefault(node, set()).add(rec.event)
        results_by_node.setdefault(node, []).extend(rec.results)
    assert events_by_node == {"new": {PACKED_RESULTS_EVENT}, "again": {PACKED_RESULTS_EVENT},
                              "old": {RESULTS_EVENT}, "typed": {RESULTS_EVENT}}
    assert results_by_node["again"] == results_by_node["typed"] and len(results_by_node["typed"]) == 2


def test_a_messages_packed_strings_are_unpacked_in_one_call_with_per_record_fallback():
    good = pack_sequences([60, 52], [True, False], [0, 310], (1, 2, 3, 0, 0, 0))
    bare = pack_sequences([60], [False], [0])
    rows = packed._batch_unpack([good, bare, "[60, 52]|[T, F]|[0, 310]|[1, 2, 3]", "[60]|[T, T]|[0]"], 64)
    assert rows[0] == ([60, 52], [True, False], [0, 310], [1, 2, 3, 0, 0, 0])
    assert rows[1] == ([60], [False], [0], None)
    assert rows[2] is None and rows[3] is None  # left to _unpack, which names what is wrong
    # Anything that is not Zeek's rendering makes the whole message take the per-record path.
    for bad in ("[60, x]|[T]|[0]", "[60]|[true]|[0]", "[60]|[T]|[0]],[[1]|[T]|[0]", "[-1]|[T]|[0]"):
        assert packed._batch_unpack([good, bad], 64) is None, bad
