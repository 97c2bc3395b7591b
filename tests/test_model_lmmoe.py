"""The LMMoE and single-task LSTM: output contract, masking, preprocessing, TorchScript."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multa_broker.flow import Flow, FlowKey, encode
from multa_broker.model.lmmoe import LMMoE, LMMoEConfig, count_params
from multa_broker.model.preprocess import INPUT_DIM, Preprocess
from multa_broker.model.single import SingleConfig, SingleTaskLSTM
from multa_broker.taxonomy import TASKS

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*deprecated:DeprecationWarning")
ALL_TASKS = {k: list(v) for k, v in TASKS.items()}


def _inputs(b: int = 6, n: int = 20, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    valid = (torch.arange(n)[None, :] < lengths[:, None]).float()
    sizes = torch.randint(40, 1501, (b, n), generator=g).float() * valid
    dirs = torch.randint(0, 2, (b, n), generator=g).float() * valid
    iats = torch.rand(b, n, generator=g) * 1e6 * valid
    iats[:, 0] = 0
    return sizes, dirs, iats, lengths, torch.randint(0, 3, (b,), generator=g)


@pytest.fixture(scope="module")
def lmmoe() -> LMMoE:
    torch.manual_seed(0)
    return LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=3, hidden=8, tower=8)).eval()


def test_output_is_one_probability_tensor_per_task_in_order(lmmoe: LMMoE) -> None:
    out = lmmoe(*_inputs())
    assert [o.shape for o in out] == [(6, len(c)) for c in ALL_TASKS.values()]
    for o in out:
        assert torch.all(o >= 0)
        torch.testing.assert_close(o.sum(dim=1), torch.ones(6))
    assert lmmoe.task_names == list(ALL_TASKS)


def test_padding_beyond_length_does_not_change_outputs(lmmoe: LMMoE) -> None:
    x = _inputs(b=8)
    lengths = x[3]
    junk = [a.clone() for a in x[:3]]
    pad = torch.arange(20)[None, :] >= lengths[:, None]
    junk[0][pad] = 999.0
    junk[1][pad] = 1.0
    junk[2][pad] = 123456.0
    ref = lmmoe(*x)
    got = lmmoe(*junk, lengths, x[4])
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b)


def test_wider_batch_with_same_flows_gives_same_outputs(lmmoe: LMMoE) -> None:
    """A flow padded to 20 or to 40 columns is the same flow."""
    x = _inputs(b=4, n=20)
    wide = [torch.cat([a, torch.zeros_like(a)], dim=1) for a in x[:3]]
    for a, b in zip(lmmoe(*x), lmmoe(*wide, x[3], x[4])):
        torch.testing.assert_close(a, b)


def test_a_flow_scores_the_same_alone_or_beside_longer_ones(lmmoe: LMMoE) -> None:
    """Steps past a batch's longest flow are left out; that must not change any flow's output."""
    x = _inputs(b=6)
    x[3][:] = torch.tensor([2, 20, 5, 1, 13, 3])
    together = lmmoe(*x)
    for i in (0, 2, 3, 5):
        alone = lmmoe(*(a[i:i + 1] for a in x))
        for a, b in zip(alone, together):
            torch.testing.assert_close(a[0], b[i])


def test_inputs_matter(lmmoe: LMMoE) -> None:
    """Not a constant function: sizes, direction, gaps and protocol all move the output."""
    x = list(_inputs(b=4))
    ref = lmmoe(*x)[0]
    for i, change in ((0, lambda a: a * 0.5), (1, lambda a: 1 - a), (2, lambda a: a * 100), (4, lambda a: (a + 1) % 3)):
        y = list(x)
        y[i] = change(x[i])
        assert not torch.allclose(lmmoe(*y)[0], ref), f"input {i} has no effect"


def test_ports_are_not_an_input() -> None:
    """Two flows that differ only in ports encode to identical model inputs."""
    a = Flow(FlowKey("tcp", "10.0.0.1", 40000, "10.0.0.2", 443, 1.0), [60, 1500], [True, False], [0, 300])
    b = Flow(FlowKey("tcp", "10.0.0.1", 50000, "10.0.0.2", 8443, 1.0), [60, 1500], [True, False], [0, 300])
    ea, eb = encode([a]), encode([b])
    for name in ("sizes", "dirs", "iats", "lengths", "proto"):
        assert np.array_equal(getattr(ea, name), getattr(eb, name))


def test_encode_pads_truncates_and_clips_each_flow_as_its_definition_says() -> None:
    """encode() fills the padded rows of a whole batch at once; each row must be exactly the
    flow's first n packets (sizes, dirs as 0/1, gaps clipped at MAX_IAT_US, even past 2**63),
    zero beyond, whatever the other flows' lengths."""
    import random

    from multa_broker.flow import MAX_IAT_US, PROTO_INDEX

    rng = random.Random(5)
    flows = []
    for k in (1, 3, 20, 21, 64, 2):
        gaps = [0] + [rng.choice((rng.randrange(10**6), MAX_IAT_US, MAX_IAT_US + 1, 2**64 - 1)) for _ in range(k - 1)]
        flows.append(Flow(FlowKey(rng.choice(("tcp", "udp", "icmp")), "10.0.0.1", 1, "10.0.0.2", 2, 1.0),
                          [rng.randint(20, 65535) for _ in range(k)], [rng.random() < 0.5 for _ in range(k)], gaps))
    for n in (1, 20, 64):
        e = encode(flows, n)
        assert e.sizes.dtype == e.dirs.dtype == e.iats.dtype == np.float32
        for row, f in enumerate(flows):
            k = min(n, len(f.sizes))
            assert e.lengths[row] == k and e.proto[row] == PROTO_INDEX[f.key.proto]
            want = {"sizes": f.sizes[:k], "dirs": [float(d) for d in f.dirs[:k]],
                    "iats": [min(g, MAX_IAT_US) for g in f.iats[:k]]}
            for name, values in want.items():
                got = getattr(e, name)[row]
                assert np.array_equal(got[:k], np.array(values, dtype=np.float32)), (name, n, row)
                assert not got[k:].any(), (name, n, row)
    empty = encode([], 20)
    assert empty.sizes.shape == (0, 20) and empty.lengths.shape == (0,)
    # A flow whose dirs is shorter than its sizes (never valid) fails; it never shifts its neighbours.
    broken = Flow(FlowKey("tcp", "10.0.0.1", 1, "10.0.0.2", 2, 1.0), [60, 60, 60], [True], [0, 1, 2])
    with pytest.raises(ValueError):
        encode([broken] + flows, 20)


def test_preprocess_scales_reverses_and_clamps_bad_values() -> None:
    from multa_broker.model.preprocess import IAT_RAMPS, SIZE_RAMPS, STEP_FEATURES

    pre = Preprocess(3)
    sizes = torch.tensor([[1500.0, 65535.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0]])
    iats = torch.tensor([[0.0, 1e6, 0.0]])
    x, summary, last = pre(sizes, dirs, iats, torch.tensor([2]), torch.tensor([7]))
    assert x.shape == (2, 1, INPUT_DIM)  # time-major, as the LSTMs read it; no step past the longest flow
    x = x[:, 0]
    assert last.tolist() == [1]
    # Last packet first: step 0 is the 65535-byte responder packet, step 1 the first packet.
    assert x[1, 0].item() == pytest.approx(1.0)  # 1500 bytes -> 1.0
    assert x[0, 0].item() == pytest.approx(2.0)  # jumbo frames saturate
    assert x[1, 2].item() == 1.0 and x[0, 2].item() == -1.0  # direction +-1
    two, _, _ = pre(sizes.repeat(2, 1), dirs.repeat(2, 1), iats.repeat(2, 1), torch.tensor([2, 3]), torch.tensor([7, 0]))
    assert two.shape == (3, 2, INPUT_DIM)
    assert torch.all(two[2, 0, :-3] == 0) and torch.all(two[:2, 0] == x)  # padding zeroed and left at the end
    assert x[0, -3:].tolist() == [0.0, 0.0, 1.0]  # protocol index clamped into range
    code = x[1, STEP_FEATURES:STEP_FEATURES + SIZE_RAMPS]
    assert torch.all(code[:-1] >= code[1:]) and code[0] == 1.0 and code[-1] < 1.0  # thermometer
    gap = x[0, STEP_FEATURES + SIZE_RAMPS:STEP_FEATURES + SIZE_RAMPS + IAT_RAMPS]
    assert 0 < gap.sum() < IAT_RAMPS and torch.all(gap[:-1] >= gap[1:])
    assert summary[0, -1].item() == pytest.approx(2 / 3)
    _, _, last0 = pre(sizes, dirs, iats, torch.tensor([0]), torch.tensor([0]))
    assert last0.tolist() == [0]  # length 0 cannot index before the first packet


def test_first_packets_reach_the_output_after_a_long_flow(lmmoe: LMMoE) -> None:
    """The first packet of a full-length flow still moves every task's output."""
    x = [a.clone() for a in _inputs(b=3)]
    x[3][:] = 20
    y = [a.clone() for a in x]
    y[0][:, 0] = 1400.0
    x[0][:, 0] = 60.0
    for a, b in zip(lmmoe(*x), lmmoe(*y)):
        assert (a - b).abs().max() > 1e-4


def test_torchscript_matches_eager(lmmoe: LMMoE) -> None:
    scripted = torch.jit.script(lmmoe)
    x = _inputs(b=5)
    for a, b in zip(lmmoe(*x), scripted(*x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("stats,context,bins", [(True, False, 0), (False, False, 0), (True, True, 0), (True, True, 4)])
def test_fused_export_form_is_the_same_function(stats: bool, context: bool, bins: int) -> None:
    """What store.export scripts (the heads fused) gives the trained LMMoE's probabilities, tasks of
    16, 2, 5 and 6 classes, with and without statistics, host context and the summary code."""
    from multa_broker.model.lmmoe import FusedLMMoE
    from multa_broker.model.preprocess import SUMMARY_DIM

    torch.manual_seed(1)
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=3, hidden=8, tower=8, stats=stats, context=context,
                           summary_bins=bins))
    if bins:
        lm.summary_code.fit(torch.rand(50, lm.summary_dim))
    lm.temperature.copy_(torch.tensor([0.5, 1.0, 2.0, 7.0]))
    lm.eval()
    fused = torch.jit.script(lm.export_form())
    assert isinstance(lm.export_form(), FusedLMMoE) and fused.task_names == lm.task_names and fused.n == lm.n
    x = _inputs(b=7)
    extra = (torch.randint(0, 50, (7, 6)), torch.tensor([1, 0, 1, 1, 0, 1, 1])) if context else ()
    wide = [torch.cat([a, torch.full_like(a, 3.0)], dim=1) for a in x[:3]]
    for inputs in (x, (*wide, x[3], x[4])):
        got, want = fused(*inputs, *extra), lm(*inputs, *extra)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert SUMMARY_DIM <= lm.summary_dim


def test_export_scripts_the_fused_form(tmp_path) -> None:
    from multa_broker import store

    torch.manual_seed(2)
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8)).eval()
    manifest = {"name": "t", "version": "1", "n": 20, "kind": "lmmoe",
                "tasks": [{"name": t, "classes": c, "threshold": 0.5} for t, c in ALL_TASKS.items()]}
    loaded = store.load(store.export(lm, manifest, tmp_path / "t" / "1"))
    assert loaded.module.original_name == "FusedLMMoE"
    x = _inputs(b=5)
    for g, w in zip(loaded.module(*x), lm(*x)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_single_task_model_contract_and_masking() -> None:
    torch.manual_seed(0)
    m = SingleTaskLSTM(SingleConfig(tasks={"service": ALL_TASKS["service"]}, hidden=8, tower=8)).eval()
    x = _inputs(b=5)
    out = m(*x)
    assert len(out) == 1 and out[0].shape == (5, len(ALL_TASKS["service"]))
    junk = [a + (torch.arange(20)[None, :] >= x[3][:, None]).float() * 77 for a in x[:3]]
    torch.testing.assert_close(m(*junk, x[3], x[4])[0], out[0])
    torch.testing.assert_close(torch.jit.script(m)(*x)[0], out[0])


def test_lmmoe_shares_experts_so_it_is_smaller_than_one_lstm_per_task() -> None:
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=32, tower=32))
    singles = [SingleTaskLSTM(SingleConfig(tasks={t: c}, hidden=32, tower=32)) for t, c in ALL_TASKS.items()]
    assert count_params(lm) < 0.65 * sum(count_params(s) for s in singles)


def test_block_diagonal_lstm_is_exactly_separate_experts() -> None:
    """The claim in experts.py: a masked width-E*H LSTM computes the E experts exactly."""
    from multa_broker.model.experts import BlockDiagonal, Separate

    torch.manual_seed(0)
    e, h, d = 3, 4, INPUT_DIM
    sep, blk = Separate(d, e, h), BlockDiagonal(d, e, h)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            full = getattr(blk.lstm, name)
            full.zero_()
            for k in range(4):
                for i, lstm in enumerate(sep.lstms):
                    rows = slice(k * e * h + i * h, k * e * h + (i + 1) * h)
                    src = getattr(lstm, name)[k * h:(k + 1) * h]
                    if name == "weight_hh_l0":
                        full[rows, i * h:(i + 1) * h] = src
                    else:
                        full[rows] = src
    x = torch.rand(20, 5, d)  # time-major
    last = torch.tensor([0, 5, 19, 3, 10])
    torch.testing.assert_close(blk(x, last), sep(x, last))


def test_flow_statistics_in_the_summary() -> None:
    """The summary's statistics match a hand count, and padding or a wider N changes none of them."""
    import math

    from multa_broker.model.preprocess import DIR_STATS, FIRST, STEP_FEATURES, SUMMARY_DIM

    pre = Preprocess(4)
    sizes = torch.tensor([[100.0, 1000.0, 100.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    iats = torch.tensor([[0.0, 10.0, 1000.0, 0.0]])
    _, s, _ = pre(sizes, dirs, iats, torch.tensor([3]), torch.tensor([0]))
    assert s.shape == (1, SUMMARY_DIM)
    ls = math.log1p(100.0) / pre.log_size
    base = STEP_FEATURES
    orig = s[0, base + DIR_STATS:base + 2 * DIR_STATS].tolist()
    assert orig[0] == pytest.approx(2 / 3)              # originator share of packets
    assert orig[1] == pytest.approx(ls, rel=1e-5)       # mean log size: both 100 bytes
    assert orig[2] == pytest.approx(0.0, abs=1e-3)      # std
    assert orig[3] == pytest.approx(ls, rel=1e-5) and orig[4] == pytest.approx(ls, rel=1e-5)
    resp = s[0, base + 2 * DIR_STATS:base + 3 * DIR_STATS].tolist()
    assert resp[0] == pytest.approx(1 / 3) and resp[3] == pytest.approx(math.log1p(1000.0) / pre.log_size, rel=1e-5)
    first = s[0, base + 3 * DIR_STATS + 5:base + 3 * DIR_STATS + 5 + FIRST].tolist()
    assert first[0] > 0 > first[1] and first[2] > 0 and first[3:] == [0.0] * (FIRST - 3)  # signed, arrival order
    wide = Preprocess(4)
    pad = [torch.cat([a, torch.full((1, 4), 9.0)], dim=1) for a in (sizes, dirs, iats)]
    _, s2, _ = wide(*pad, torch.tensor([3]), torch.tensor([0]))
    torch.testing.assert_close(s2, s)


@pytest.mark.parametrize("stats", [True, False])
def test_towers_read_the_statistics_only_when_asked(stats: bool) -> None:
    from multa_broker.model.preprocess import SUMMARY_DIM

    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8, stats=stats))
    single = SingleTaskLSTM(SingleConfig(tasks={"service": ALL_TASKS["service"]}, hidden=8, tower=8, stats=stats))
    extra = SUMMARY_DIM if stats else 0
    assert lm.heads[0].tower.net[1].in_features == 8 + extra
    assert single.tower.net[1].in_features == 8 + extra
    x = _inputs(b=3)
    torch.testing.assert_close(torch.jit.script(lm.eval())(*x)[0], lm(*x)[0])


def test_summary_code_ramps_between_fitted_quantiles() -> None:
    from multa_broker.model.preprocess import SummaryCode

    code = SummaryCode(dim=2, bins=4)
    # Feature 0 spread over 0..100, feature 1 constant: quantile edges 0,25,50,75,100 and a step.
    train = torch.stack([torch.linspace(0, 100, 101), torch.full((101,), 7.0)], dim=1)
    code.fit(train)
    torch.testing.assert_close(code.lo[0], torch.tensor([0.0, 25.0, 50.0, 75.0]))
    out = code(torch.tensor([[30.0, 7.5], [-5.0, 6.0], [200.0, 7.0]]))
    assert out.shape == (3, 8)
    # 30 fills the first bin, 5/25 of the second, none of the rest.
    torch.testing.assert_close(out[0, :4], torch.tensor([1.0, 0.2, 0.0, 0.0]))
    torch.testing.assert_close(out[1, :4], torch.zeros(4))   # below the training range
    torch.testing.assert_close(out[2, :4], torch.ones(4))    # above it
    # The constant feature's zero-width bins are steps at its value.
    assert out[0, 4:].tolist() == [1.0] * 4 and out[1, 4:].tolist() == [0.0] * 4
    assert SummaryCode(dim=5, bins=0)(torch.ones(3, 5)).shape == (3, 0)


def test_summary_code_is_fitted_on_training_flows_and_travels_in_the_archive(tmp_path) -> None:
    from multa_broker.model.experiment import fit_summary_code
    from multa_broker.model.preprocess import CONTEXT_DIM, SUMMARY_DIM

    torch.manual_seed(0)
    cfg = LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8, context=True, summary_bins=4)
    lm = LMMoE(cfg)
    single = SingleTaskLSTM(SingleConfig(tasks={"service": ALL_TASKS["service"]}, hidden=8, tower=8,
                                         context=True, summary_bins=4))
    width = (SUMMARY_DIM + CONTEXT_DIM) * 5
    assert lm.heads[0].tower.net[1].in_features == 8 + width
    assert single.tower.net[1].in_features == 8 + width
    x = _inputs(b=64)
    inputs = (*x, torch.randint(0, 40, (64, 6)).float(), torch.ones(64))
    before = lm.summary_code.lo.clone()
    fit_summary_code(lm, inputs)
    assert not torch.equal(before, lm.summary_code.lo)
    _x, summary, _last = lm.pre(*x)
    summary = torch.cat([summary, lm.ctx_in(inputs[5], inputs[6], 64, summary.dtype)], dim=1)
    q = torch.quantile(summary.double(), 0.25, dim=0).float()
    torch.testing.assert_close(lm.summary_code.lo[:, 1], q)
    path = tmp_path / "m.pt"
    torch.jit.script(lm.eval()).save(str(path))
    loaded = torch.jit.load(str(path))
    torch.testing.assert_close(loaded.summary_code.lo, lm.summary_code.lo)
    torch.testing.assert_close(loaded(*inputs)[0], lm(*inputs)[0])


def test_size_buckets_are_exact_below_256_then_16_bytes_wide() -> None:
    from multa_broker.model.preprocess import SIZE_BUCKETS, size_bucket

    got = size_bucket(torch.tensor([0.0, 40.0, 76.0, 255.0, 256.0, 271.0, 272.0, 1535.0, 1536.0, 65535.0]))
    assert got.tolist() == [0, 40, 76, 255, 256, 256, 257, 335, 336, 336]
    assert SIZE_BUCKETS == 337 and got.dtype == torch.int64


def test_size_embedding_widens_the_steps_and_keeps_the_masking_exact(tmp_path) -> None:
    """With --size-embed the experts read one learnt vector per packet size: the steps get wider,
    padding and a batch's longer flows still change nothing, two sizes in one bucket look alike
    where other sizes do not, and the scripted archive (the fused form) is the same function."""
    torch.manual_seed(3)
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8, size_embed=4)).eval()
    single = SingleTaskLSTM(SingleConfig(tasks={"service": ALL_TASKS["service"]}, hidden=8, size_embed=4))
    assert lm.experts[0].input_size == INPUT_DIM + 4 and single.lstm.input_size == INPUT_DIM + 4
    plain = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8))
    assert "pre.size_embed.0.weight" in lm.state_dict() and not any("size_embed" in k for k in plain.state_dict())
    x = _inputs(b=6)
    x[3][:] = torch.tensor([2, 20, 5, 1, 13, 3])
    steps, _summary, _last = lm.pre(*x)
    assert steps.shape == (20, 6, INPUT_DIM + 4)
    emb = steps[:, :, INPUT_DIM:]
    assert torch.all(emb[2:, 0] == 0) and emb[:2, 0].abs().sum() > 0  # flow 0 has 2 packets
    assert torch.all(emb[1:, 3] == 0) and emb[0, 3].abs().sum() > 0  # flow 3 has 1
    together = lm(*x)
    for i in (0, 3, 5):
        alone = lm(*(a[i:i + 1] for a in x))
        for a, b in zip(alone, together):
            torch.testing.assert_close(a[0], b[i])
    one = [a[:1].clone() for a in x]
    one[3][:] = 1
    vec = []
    for size in (300.0, 303.0, 400.0):
        one[0][0, 0] = size
        vec.append(lm.pre(*one)[0][0, 0, INPUT_DIM:])
    assert torch.equal(vec[0], vec[1]) and not torch.equal(vec[0], vec[2])
    scripted = torch.jit.script(lm.export_form())
    for a, b in zip(lm(*x), scripted(*x)):
        torch.testing.assert_close(a, b)
    path = tmp_path / "m.pt"
    scripted.save(str(path))
    for a, b in zip(lm(*x), torch.jit.load(str(path))(*x)):
        torch.testing.assert_close(a, b)


def test_size_bag_widens_the_summary_and_keeps_the_masking_exact(tmp_path) -> None:
    """With --size-bag the summary gains the mean of a learnt vector per packet direction and size
    bucket and the first packet's own: padding and a batch's longer flows change nothing, a
    packet's direction and size change it, length/N stays last, and the fused archive agrees."""
    from multa_broker.model.preprocess import SIZE_BUCKETS, SUMMARY_DIM

    torch.manual_seed(4)
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8, size_bag=4)).eval()
    single = SingleTaskLSTM(SingleConfig(tasks={"service": ALL_TASKS["service"]}, hidden=8, size_bag=4))
    assert lm.summary_dim == single.summary_dim == SUMMARY_DIM + 8
    assert lm.state_dict()["pre.size_bag.0.weight"].shape == (2 * SIZE_BUCKETS, 4)
    assert lm.heads[0].gate.in_features == SUMMARY_DIM + 8
    x = _inputs(b=6)
    x[3][:] = torch.tensor([2, 20, 5, 1, 13, 3])
    _steps, summary, _last = lm.pre(*x)
    assert summary.shape == (6, SUMMARY_DIM + 8)
    assert summary[0, -1].item() == pytest.approx(2 / 20)  # length/N still last
    garbage = [a.clone() for a in x]
    garbage[0][0, 2:] = 999.0  # past flow 0's two packets
    garbage[1][0, 2:] = 1.0
    torch.testing.assert_close(lm.pre(*garbage)[1], summary)
    together = lm(*x)
    for i in (0, 3, 5):
        alone = lm(*(a[i:i + 1] for a in x))
        for a, b in zip(alone, together):
            torch.testing.assert_close(a[0], b[i])
    one = [a[3:4].clone() for a in x]  # one packet: its vector is both the mean and the first
    bag = slice(SUMMARY_DIM - 4, SUMMARY_DIM + 4)  # before the protocol one-hot and length/N
    first = lm.pre(*one)[1][0, bag]
    assert torch.equal(first[:4], first[4:])
    one[1][0, 0] = 1.0 - one[1][0, 0]
    flipped = lm.pre(*one)[1][0, bag]
    one[0][0, 0] += 300.0
    resized = lm.pre(*one)[1][0, bag]
    assert not torch.equal(first, flipped) and not torch.equal(flipped, resized)
    scripted = torch.jit.script(lm.export_form())
    path = tmp_path / "m.pt"
    scripted.save(str(path))
    for a, b, c in zip(lm(*x), scripted(*x), torch.jit.load(str(path))(*x)):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("bins", [0, 3])
def test_tasks_left_out_of_the_bag_never_read_it(bins: int) -> None:
    """With --size-bag-tasks, the other tasks' gates and towers (and their summary code) do not
    see the bag: changing its vectors moves only the tasks that read it, in the fused form too."""
    from multa_broker.model.lmmoe import FusedLMMoE
    from multa_broker.model.experiment import fit_summary_code

    torch.manual_seed(5)
    lm = LMMoE(LMMoEConfig(tasks=ALL_TASKS, experts=2, hidden=8, tower=8, size_bag=4, summary_bins=bins,
                           size_bag_tasks=["service"])).eval()
    x = _inputs(b=8)
    fit_summary_code(lm, x)
    before = [z.clone() for z in lm.logits(*x)]
    fused_before = FusedLMMoE(lm).logits(*x)
    with torch.no_grad():
        lm.pre.size_bag[0].weight.add_(torch.randn_like(lm.pre.size_bag[0].weight))
    after = lm.logits(*x)
    fused_after = torch.jit.script(FusedLMMoE(lm)).logits(*x)
    names = list(ALL_TASKS)
    for i, task in enumerate(names):
        torch.testing.assert_close(fused_before[i], before[i])
        torch.testing.assert_close(fused_after[i], after[i])
        if task == "service":
            assert not torch.allclose(after[i], before[i])
        else:
            torch.testing.assert_close(after[i], before[i])
