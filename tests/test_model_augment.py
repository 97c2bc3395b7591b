"""Training-time augmentation: each transform does what it says and keeps the flow well-formed."""

from __future__ import annotations

import numpy as np

from multa_broker.model.augment import AugmentConfig, augment
from multa_broker.model.synthetic import make_dataset


def _batch(flows: int = 64, n: int = 20):
    e = make_dataset(flows, seed=4).encoded(n)
    return e.sizes.copy(), e.dirs.copy(), e.iats.copy(), e.lengths.copy(), np.zeros(flows, np.int64)


def _only(**kw) -> AugmentConfig:
    return AugmentConfig(**{**AugmentConfig.off().to_json(), **kw})


def _well_formed(sizes, dirs, iats, lengths) -> None:
    n = sizes.shape[1]
    pad = np.arange(n)[None, :] >= lengths[:, None]
    assert (sizes[pad] == 0).all() and (dirs[pad] == 0).all() and (iats[pad] == 0).all()
    assert (sizes[~pad] >= 20).all()
    assert (iats >= 0).all() and (iats[:, 0] == 0).all()
    assert set(np.unique(dirs)) <= {0.0, 1.0}
    assert ((lengths >= 1) & (lengths <= n)).all()


def test_off_changes_nothing_and_inputs_are_never_modified() -> None:
    b = _batch()
    before = [a.copy() for a in b]
    out = augment(*b, np.random.default_rng(0), AugmentConfig.off())
    for x, y in zip(out, before[:4]):
        np.testing.assert_array_equal(x, y)
    out = augment(*b, np.random.default_rng(0), AugmentConfig())
    for x, y in zip(b, before):
        np.testing.assert_array_equal(x, y)
    _well_formed(*out)


def test_time_scale_multiplies_every_gap_of_a_flow_by_one_factor() -> None:
    sizes, dirs, iats, lengths, proto = _batch()
    _, _, out, _ = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(1),
                           _only(time_scale_p=1.0, time_scale=(0.1, 10.0)))
    ratios = []
    for i in range(len(iats)):
        k = lengths[i]
        r = out[i, 1:k] / iats[i, 1:k]
        np.testing.assert_allclose(r, r[0], rtol=1e-5)
        ratios.append(r[0])
    assert min(ratios) >= 0.1 - 1e-6 and max(ratios) <= 10 + 1e-6
    assert max(ratios) / min(ratios) > 5  # really drawn per flow, over the range


def test_resegmentation_splits_big_tcp_packets_and_keeps_the_bytes() -> None:
    sizes = np.zeros((1, 20), np.float32)
    dirs = np.zeros((1, 20), np.float32)
    iats = np.zeros((1, 20), np.float32)
    sizes[0, :4] = [60, 1500, 1500, 52]
    dirs[0, :4] = [1, 0, 0, 1]
    iats[0, :4] = [0, 100, 5, 40]
    lengths = np.array([4])
    s, d, g, n = augment(sizes, dirs, iats, lengths, np.zeros(1, np.int64), np.random.default_rng(2),
                         _only(reseg_p=1.0))
    k = int(n[0])
    assert k > 4 and s[0, :k].max() <= 1460
    payload = lambda sz, ln: float(np.sum(sz[:ln] - 40))  # noqa: E731
    assert payload(s[0], k) == payload(sizes[0], 4)
    # Direction order kept: one originator packet, responder pieces, originator again.
    assert d[0, 0] == 1 and d[0, k - 1] == 1 and (d[0, 1:k - 1] == 0).all()
    _well_formed(s, d, g, n)


def test_udp_is_never_resegmented_and_cut_short_flows_stay_well_formed() -> None:
    sizes, dirs, iats, lengths, _ = _batch()
    udp = np.ones(len(sizes), np.int64)
    s, d, g, n = augment(sizes, dirs, iats, lengths, udp, np.random.default_rng(3), _only(reseg_p=1.0, loss_p=1.0))
    np.testing.assert_array_equal(s, sizes)
    s, d, g, n = augment(sizes, dirs, iats, lengths, udp, np.random.default_rng(3), _only(cut_p=1.0))
    assert (n < lengths).all()
    _well_formed(s, d, g, n)


def test_loss_adds_a_late_retransmission_or_removes_one_packet() -> None:
    sizes, dirs, iats, lengths, proto = _batch(200)
    s, d, g, n = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(5), _only(loss_p=1.0))
    changed = n != lengths
    assert changed.any()
    grew = n > lengths
    assert (g[grew] >= 2e5).any(axis=1).all()  # the retransmission waited for a timeout
    assert ((n == lengths + 1) | (n == lengths - 1) | (n == lengths)).all()
    _well_formed(s, d, g, n)


def test_payload_noise_scales_payloads_and_keeps_headers_and_the_mtu() -> None:
    sizes = np.array([[60, 60, 52, 300, 1500, 52, 0, 0], [373, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    dirs = np.array([[1, 0, 1, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    iats = np.zeros_like(sizes)
    lengths, proto = np.array([6, 1]), np.array([0, 1])
    rng = np.random.default_rng(3)
    seen = []
    for _ in range(40):
        out, d, _, n = augment(sizes, dirs, iats, lengths, proto, rng, _only(payload_p=1.0, payload_sigma=0.3))
        np.testing.assert_array_equal(d, dirs)
        np.testing.assert_array_equal(n, lengths)
        np.testing.assert_array_equal(out[0, [0, 1, 2, 5]], sizes[0, [0, 1, 2, 5]])  # header-only TCP
        assert out[0, 4] <= 1500 and (out[:, 6:] == 0).all() and out[1, 1:].sum() == 0
        assert out[1, 0] > 28
        seen.append((out[0, 3], out[1, 0]))
    tcp, udp = np.array(seen).T
    assert len(set(tcp)) > 20 and len(set(udp)) > 20   # drawn per flow, over a range
    assert tcp.min() < 260 < tcp.max() and udp.min() < 373 < udp.max()
    none = augment(sizes, dirs, iats, lengths, proto, rng, _only(payload_p=0.0, header_p=0.0))[0]
    np.testing.assert_array_equal(none, sizes)


def test_path_delay_adds_one_round_trip_share_at_each_turn_and_leaves_bursts_alone() -> None:
    sizes, dirs, iats, lengths, proto = _batch()
    s2, d2, i2, l2 = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(5),
                             _only(rtt_p=1.0, rtt_ms=(50.0, 50.0)))
    np.testing.assert_array_equal(s2, sizes)
    np.testing.assert_array_equal(d2, dirs)
    np.testing.assert_array_equal(l2, lengths)
    _well_formed(s2, d2, i2, l2)
    valid = np.arange(sizes.shape[1])[None, :] < lengths[:, None]
    turn = np.zeros_like(valid)
    turn[:, 1:] = valid[:, 1:] & (dirs[:, 1:] != dirs[:, :-1])
    added = i2 - iats
    assert turn.any() and (~turn & valid).any()
    np.testing.assert_allclose(added[~turn], 0.0)            # back-to-back packets keep their gaps
    assert (added[turn] >= 0).all() and added[turn].max() > 1000
    for f in range(len(lengths)):
        to_resp = added[f][turn[f] & (dirs[f] == 0)]
        to_orig = added[f][turn[f] & (dirs[f] == 1)]
        if len(to_resp) and len(to_orig):
            # One split of one 50 ms round trip per flow: the two sides' waits add up to it.
            assert np.allclose(to_resp, to_resp[0], rtol=1e-4) and np.allclose(to_orig, to_orig[0], rtol=1e-4)
            assert abs(to_resp[0] + to_orig[0] - 50_000) < 5
    # Off (the default) draws nothing, so recipes without it keep their random stream.
    a = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(9), AugmentConfig())
    b = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(9), AugmentConfig(rtt_p=0.0))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_augmentation_shares_outside_0_1_are_refused() -> None:
    import pytest

    from multa_broker.errors import MultaError
    with pytest.raises(MultaError, match="rtt_p"):
        AugmentConfig(rtt_p=1.5)
    with pytest.raises(MultaError, match="round trips"):
        AugmentConfig(rtt_ms=(0.0, 10.0))


def test_augment_share_sets_each_named_transform_and_keeps_sizes_when_asked(capsys) -> None:
    from multa_broker.cli import main
    from multa_broker.commands.train import AUGMENT_SHARES, parse_augment_shares

    assert parse_augment_shares("") == {}
    kept = AugmentConfig(**parse_augment_shares("header=0, reseg=0"))
    assert (kept.header_p, kept.reseg_p, kept.jitter_p) == (0.0, 0.0, AugmentConfig().jitter_p)
    assert set(AUGMENT_SHARES.values()) <= set(AugmentConfig().to_json())
    # Without the two size transforms (and without loss and cut, which drop packets) no size moves.
    sizes, dirs, iats, lengths, proto = _batch()
    from multa_broker.flow import PROTO_INDEX
    proto[:] = PROTO_INDEX["tcp"]  # resegmentation touches TCP only
    cfg = AugmentConfig(**parse_augment_shares("header=0,reseg=0,loss=0,cut=0"))
    out = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(2), cfg)
    np.testing.assert_array_equal(out[0], sizes)
    assert not np.array_equal(out[2], iats)
    moved = augment(sizes, dirs, iats, lengths, proto, np.random.default_rng(2), AugmentConfig())
    assert not np.array_equal(moved[0], sizes)
    for bad, says in (("hdr=0", "'hdr=0'"), ("header", "'header'"), ("cut=x", "'x'"), ("header=2", "header_p")):
        assert main(["train", "--dataset", "none.npz", "--augment-share", bad]) != 0
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
