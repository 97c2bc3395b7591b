"""The QUIC and other-tunnel scenarios without root: registration and tools, labels, the rules each
states, the commands it would run (drawn from the seed, against lab addresses), and the committed
capture of a tiny run checked against its labels."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import pytest

from multa_broker.flow import FlowKey
from multa_broker.lab import othertunnels, quic
from multa_broker.lab.network import HOSTS, Conditions, Host, assert_lab_address
from multa_broker.lab.procs import Result
from multa_broker.lab.scenario import REGISTRY, Context, ScenarioError
from support.labfixture import assert_every_flow_labelled_once, fixture_records

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "lab-quic"

SCENARIOS = {"quic": ("benign", {"/usr/sbin/gtlsserver", "gtlsclient"}),
             "quic-aioquic": ("benign", set()),
             "sshtunnel": ("tunnel", {"/usr/sbin/sshd", "ssh"}),
             "httptunnel": ("tunnel", {"hts", "htc"}),
             "icmptunnel": ("tunnel", {"ptunnel-ng"})}


def test_scenarios_are_registered_with_their_tools():
    for name, (kind, tools) in SCENARIOS.items():
        spec = REGISTRY[name]
        assert spec.kind == kind, name
        assert tools <= set(spec.needs), name
    assert REGISTRY["quic-aioquic"].check is not None  # aioquic is a Python package, not a tool on PATH


def test_labels_use_the_taxonomy_classes():
    assert quic.QUIC.as_dict() == {"service": "quic", "encrypted": "encrypted", "tunnel": "none", "threat": "benign"}
    assert othertunnels.SSH_TUNNEL.as_dict() == {"service": "ssh", "encrypted": "encrypted",
                                                 "tunnel": "other-tunnel", "threat": "benign"}
    assert othertunnels.HTTP_TUNNEL.as_dict() == {"service": "http", "encrypted": "cleartext",
                                                  "tunnel": "other-tunnel", "threat": "benign"}
    # ICMP echo is no application service: unknown, never guessed.
    assert othertunnels.ICMP_TUNNEL.service is None and othertunnels.ICMP_TUNNEL.tunnel == "other-tunnel"


# -- the scenarios run against a stand-in context: rules and commands, no processes ---------------------

class _Proc:
    pid = 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    returncode = None

    def poll(self) -> None:
        return None  # still running, as a healthy server is


class _Procs:
    def __init__(self, seen: list[list[str]]):
        self.seen, self.env = seen, {}

    def start(self, ns: str, argv: Sequence[Any], name: str, **kw: Any) -> SimpleNamespace:
        self.seen.append([str(a) for a in argv])
        return SimpleNamespace(name=name, proc=_Proc(), log_path=Path("/nonexistent"), log_text=lambda: "")

    def stop(self, d: Any, grace: float = 3.0) -> None:
        pass

    def run(self, ns: str, argv: Sequence[Any], timeout: float, **kw: Any) -> Result:
        self.seen.append([str(a) for a in argv])
        return Result([str(a) for a in argv], 0, "", 0.0)


class StandIn(Context):
    """Records every command instead of running it; the rules and seeded draws are the scenario's own."""

    def client(self, role, argv, timeout, ok=False, env=None, input=None):  # type: ignore[override]
        return self.procs.run(role, argv, timeout)

    def daemon(self, role, argv, name, listen=(), wait=15.0, env=None):  # type: ignore[override]
        return self.procs.start(role, argv, name)

    def pause(self, lo: float, hi: float) -> None:
        pass


def _run(name: str, seed: int, tmp_path: Path, mtu: int = 1500) -> tuple[StandIn, list[list[str]]]:
    ctx, seen = _stand_in(name, seed, tmp_path, mtu)
    REGISTRY[name].func(ctx)
    return ctx, seen


def _stand_in(name: str, seed: int, tmp_path: Path, mtu: int = 1500) -> tuple[StandIn, list[list[str]]]:
    seen: list[list[str]] = []
    hosts = {r: Host(r, f"mlab-test-{r}", ip, extra) for r, (ip, extra) in HOSTS.items()}
    net = SimpleNamespace(hosts=hosts, conditions=Conditions(mtu), prefix="mlab-test-",
                          listening=lambda role: "")
    ctx = StandIn(f"{name}-s{seed}", net, _Procs(seen), random.Random(f"{seed}:{name}"),  # type: ignore[arg-type]
                  tmp_path / f"{name}-{seed}-{mtu}", scale=0.1)
    ctx.dir.mkdir(parents=True)
    return ctx, seen


def _key(proto: str, client: str, server: str, port: int) -> FlowKey:
    return FlowKey(proto, client, 40000, server, port, 1.0)


@pytest.mark.parametrize("name", ["quic", "quic-aioquic"])
def test_quic_rules_take_the_server_udp_port_only(name, tmp_path):
    ctx, seen = _run(name, 1, tmp_path)
    quic_rule = ctx.rules[0]
    assert quic_rule.labels == quic.QUIC and quic_rule.protos == frozenset({"udp"})
    (port,) = quic_rule.ports
    assert quic_rule.matches(_key("udp", ctx.cli.ip, quic_rule.server, port))
    assert not quic_rule.matches(_key("tcp", ctx.cli.ip, quic_rule.server, port))
    assert not quic_rule.matches(_key("udp", ctx.cli.ip, quic_rule.server, port + 1))
    # The server listens on the rule's address and port.
    served = [a for a in seen if "gtlsserver" in a[0] or "serve" in a]
    assert served and str(port) in served[0] and quic_rule.server in served[0]


def test_quic_datagrams_fit_the_drawn_path(tmp_path):
    for seed in range(1, 15):
        for name, flag in (("quic", "--max-udp-payload-size"), ("quic-aioquic", "--max-datagram-size")):
            _, seen = _run(name, seed, tmp_path, mtu=1280)
            sizes = [int(a[a.index(flag) + 1]) for a in seen if flag in a]
            assert all(1200 <= s <= 1280 - 28 for s in sizes), (name, seed, sizes)


def test_quic_draws_vary_with_the_seed(tmp_path):
    flags: Counter[str] = Counter()
    for seed in range(1, 8):
        _, seen = _run("quic", seed, tmp_path)
        for argv in seen:
            if argv[0] == "gtlsclient":
                flags.update(a for a in argv if a.startswith("--"))
    for flag in ("--session-file", "--cc", "--sni", "--key-update", "--ciphers"):
        assert flags[flag] > 0, flag


@pytest.mark.parametrize("name", ["quic", "quic-aioquic", "httptunnel", "icmptunnel"])
def test_clients_only_target_lab_addresses(name, tmp_path):
    for seed in range(1, 6):
        ctx, seen = _run(name, seed, tmp_path)
        for rule in ctx.rules:
            assert rule.server is None or assert_lab_address(rule.server)
        for argv in seen:
            for a in argv:
                if a.startswith("10."):
                    assert_lab_address(a.split(":")[0])


def test_httptunnel_carries_to_the_server_loopback(tmp_path):
    ctx, seen = _run("httptunnel", 2, tmp_path)
    (rule,) = ctx.rules
    assert rule.labels == othertunnels.HTTP_TUNNEL and rule.protos == frozenset({"tcp"})
    hts = [a for a in seen if a[0] == "hts"]
    htc = [a for a in seen if a[0] == "htc"]
    assert hts and len(hts) == len(htc)
    # The inner connection ends on the server's loopback: never on the bridge, never labelled.
    assert all(a[a.index("-F") + 1] == "127.0.0.1:80" for a in hts)
    assert all(a[-1] == f"{rule.server}:{min(rule.ports)}" for a in htc)


def test_icmptunnel_labels_icmp_or_its_udp_mode(tmp_path):
    modes = set()
    for seed in range(1, 12):
        ctx, seen = _run("icmptunnel", seed, tmp_path)
        (rule,) = ctx.rules
        assert rule.labels == othertunnels.ICMP_TUNNEL and rule.server == ctx.srv.ip
        udp = any("--udp" in a for a in seen)
        modes.add(udp)
        if udp:
            assert rule.protos == frozenset({"udp"}) and rule.ports == frozenset({53})
        else:
            assert rule.protos == frozenset({"icmp"}) and rule.ports is None
            assert rule.matches(FlowKey("icmp", ctx.cli.ip, 8, ctx.srv.ip, 0, 1.0))
        # The echo-reply switch is undone by the scenario's clean-up.
        if any("net.ipv4.icmp_echo_ignore_all=1" in a for a in seen):
            assert ctx.cleanups
    assert modes == {True, False}


@pytest.mark.parametrize("curl, fails", [(18, False), (7, True), (None, True)])
def test_icmptunnel_counts_a_cut_transfer_as_carried(curl, fails, tmp_path, monkeypatch):
    # ptunnel-ng cuts transfers short now and then (curl 18): bytes went through, so the tunnel
    # worked; a refused connection (7) or a timeout (None) in every fetch of a session did not.
    def run(self, ns, argv, timeout, **kw):
        self.seen.append([str(a) for a in argv])
        return Result([str(a) for a in argv], curl if "curl" in str(argv[0]) else 0, "", 0.0)

    monkeypatch.setattr(_Procs, "run", run)
    if fails:
        with pytest.raises(ScenarioError, match="nothing got through ptunnel-ng"):
            _run("icmptunnel", 2, tmp_path)
    else:
        ctx, _ = _run("icmptunnel", 2, tmp_path)
        assert ctx.notes and all(n.endswith("curl 18") for n in ctx.notes)


def test_tunnel_fetches_may_take_curls_allowance_for_every_object(tmp_path, monkeypatch):
    # curl's --max-time bounds each object; the run's own limit must not cut a slow tunnel
    # (iodine over a long path) short before curl's would.
    from multa_broker.lab import tunnels  # noqa: F401  (registers iodine)
    from multa_broker.lab.benign import CURL_MAX_TIME

    asked: list[tuple[list[str], float]] = []

    def run(self, ns, argv, timeout, **kw):
        asked.append(([str(a) for a in argv], timeout))
        return Result([str(a) for a in argv], 0, "", 0.0)

    monkeypatch.setattr(_Procs, "run", run)
    monkeypatch.setattr(StandIn, "wait_until", lambda self, what, ok, timeout: None)
    for seed in (1, 2, 3):
        _run("iodine", seed, tmp_path)
    fetches = [(argv, t) for argv, t in asked if argv[0] == "curl"]
    assert fetches and any(argv.count("-o") > 1 for argv, _ in fetches)
    for argv, timeout in fetches:
        assert timeout >= CURL_MAX_TIME * argv.count("-o")


def test_setup_script_and_docs_list_the_packages():
    text = (REPO / "scripts" / "lab-setup.sh").read_text()
    docs = (REPO / "docs" / "lab.md").read_text()
    for pkg in ("ngtcp2-server", "ngtcp2-client", "httptunnel", "ptunnel-ng"):
        assert f" {pkg} " in text.replace("\n", " ") or f" {pkg}\"" in text, pkg
        assert pkg in docs, pkg
    assert "aioquic" in (REPO / "pyproject.toml").read_text()


# -- the committed capture (a tiny run; see tests/fixtures/lab-quic/README.md) ----------------------------

def _fixture_records() -> list[dict]:
    return fixture_records(FIXTURES)


def test_fixture_labels_name_every_flow_of_each_capture():
    records = _fixture_records()
    assert {r["scenario"] for r in records} == set(SCENARIOS)
    assert_every_flow_labelled_once(FIXTURES, records)


def test_fixture_labels_follow_the_scenarios():
    by = Counter((r["scenario"], r["proto"], r["service"], r["tunnel"]) for r in _fixture_records())
    assert by[("quic", "udp", "quic", "none")] >= 2
    assert by[("quic-aioquic", "udp", "quic", "none")] >= 2
    assert by[("sshtunnel", "tcp", "ssh", "other-tunnel")] >= 2
    assert by[("httptunnel", "tcp", "http", "other-tunnel")] >= 2
    assert sum(n for (s, _, _, t), n in by.items() if s == "icmptunnel" and t == "other-tunnel") >= 1
    for r in _fixture_records():
        assert r["threat"] == "benign"
        if r["service"] == "quic":
            assert r["proto"] == "udp" and r["encrypted"] == "encrypted"


@pytest.mark.parametrize("name", ["httptunnel", "icmptunnel"])
def test_inner_curl_runs_get_the_time_curl_itself_may_take(name, tmp_path):
    from multa_broker.lab.benign import CURL_MAX_TIME

    # curl's --max-time bounds each object; a run of several over a slow path must not be killed
    # before curl gives up on its own (a fixed 120 s did that to runs of two or more objects).
    runs = []
    for seed in range(1, 8):
        ctx, _ = _stand_in(name, seed, tmp_path)
        timed: list[tuple[list[str], float]] = []
        ctx.client = lambda role, argv, timeout, ok=False, env=None, input=None, t=timed: (  # type: ignore[method-assign]
            t.append(([str(a) for a in argv], timeout)) or Result([str(a) for a in argv], 0, "", 0.0))
        REGISTRY[name].func(ctx)
        runs += [(argv, timeout) for argv, timeout in timed if argv[0] == "curl"]
    assert runs and any(sum(a.startswith("http") for a in argv) >= 2 for argv, _ in runs)
    for argv, timeout in runs:
        assert timeout >= CURL_MAX_TIME * sum(a.startswith("http") for a in argv), (argv, timeout)
