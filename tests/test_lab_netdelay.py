"""Delay, jitter and loss in the lab without netem: the draws, the NFQUEUE messages, and a real queue.

The namespace test needs root, `ip netns` and iptables (scripts/lab-setup.sh --ci); it skips with
the reason otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multa_broker.lab import netdelay, runner
from multa_broker.lab.network import MTUS, Conditions
from multa_broker.lab.netdelay import Delay, FifoRelease

LAB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_path_draws_stay_in_range_and_leave_mtu_and_mss_alone():
    delays, jitters, losses = [], [], []
    for seed in range(400):
        base = Conditions.draw(random.Random(seed))
        c = base.with_path(random.Random(f"d{seed}"))
        assert (c.mtu, c.mss) == (base.mtu, base.mss)
        assert c == base.with_path(random.Random(f"d{seed}"))  # seeded
        assert c.delay_ms == 0 or 0.5 <= c.delay_ms <= 150  # round trips of 1-300 ms
        assert c.jitter_ms == 0 or (c.delay_ms > 0 and c.jitter_ms <= 0.3 * c.delay_ms + 0.01)
        assert c.loss == 0 or 0.001 <= c.loss <= 0.03
        delays.append(c.delay_ms)
        jitters.append(c.jitter_ms)
        losses.append(c.loss)
    assert 0.3 < sum(d == 0 for d in delays) / 400 < 0.5
    assert max(delays) > 100 and min(d for d in delays if d) < 5
    assert 0.2 < sum(j > 0 for j in jitters) / 400 < 0.4
    assert 0.2 < sum(x > 0 for x in losses) / 400 < 0.4
    assert all(Conditions().with_path(random.Random(s), delay_possible=False).delay_ms == 0 for s in range(50))


def test_runner_gives_floods_loss_but_no_delay_and_ci_runs_nothing():
    for seed in range(1, 40):
        assert runner.conditions("http", seed, 0.25) == Conditions()
        for name in runner.NO_DELAY:
            assert runner.conditions(name, seed, 1.0).delay_ms == 0
        # Tunnels: the standard MTU, but delay and loss like every other scenario.
        w = runner.conditions("wireguard", seed, 1.0)
        assert (w.mtu, w.mss) == (1500, None)
    assert any(runner.conditions("wireguard", s, 1.0).delay_ms for s in range(1, 40))
    assert any(runner.conditions("dos-synflood", s, 1.0).loss for s in range(1, 40))
    # The MTU of a run made before delays existed is drawn as it was.
    for seed in range(1, 20):
        assert runner.conditions("smb", seed, 1.0).mtu == Conditions.draw(random.Random(f"{seed}:smb:path")).mtu
    assert {runner.conditions("smb", s, 1.0).mtu for s in range(1, 60)} <= {1500, *MTUS}


def test_fifo_release_never_reorders_and_releases_in_batches():
    fifo = FifoRelease(Delay(10.0, 8.0), random.Random(3))
    for pid in range(1, 200):
        fifo.hold(pid, now=pid * 0.001)
    times = [t for t, _ in fifo.held]
    assert times == sorted(times)
    assert all(t >= pid * 0.001 for (t, pid) in fifo.held)
    assert fifo.due(0.0) is None
    mid = fifo.held[100][0]
    last = fifo.due(mid)
    assert last is not None and last >= 101 and all(p > last for _, p in fifo.held)
    assert fifo.due(10.0) == 199 and fifo.next_at() is None
    assert Delay(1.0, 50.0).draw(random.Random(1)) >= 0  # jitter never makes a delay negative


def _nlmsg(mtype: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def test_netlink_messages_have_the_kernel_layout():
    bind, params = netdelay.config_messages(7)
    length, mtype, flags = struct.unpack_from("=IHH", bind)
    assert length == len(bind) and mtype == (3 << 8) | 2 and flags & 4  # NFQNL_MSG_CONFIG, with an ack
    assert struct.unpack_from("!H", bind, 18)[0] == 7  # nfgenmsg res_id: the queue, big-endian
    assert struct.unpack_from("=HH", bind, 20) == (8, 1) and bind[24] == 1  # NFQA_CFG_CMD: BIND
    assert struct.unpack_from("!H", bind, 26)[0] == socket.AF_INET
    assert len(params) % 4 == 0 and struct.unpack_from("=HH", params, 20) == (9, 2)  # copy range + mode
    assert params[28] == 1  # NFQNL_COPY_META: no payload crosses to user space
    v = netdelay.verdict_batch(7, 0x01020304, 5)
    assert struct.unpack_from("=IH", v) == (len(v), (3 << 8) | 3)
    assert struct.unpack_from("!II", v, 24) == (1, 0x01020304)  # NF_ACCEPT, every id up to this one
    # A packet message: nfgenmsg, then a hardware address attribute, then the packet header.
    hdr = struct.pack("!IHB", 0xA0B0C0D0, 0x0800, 3) + b"\0"
    body = struct.pack("=BBH", 2, 0, 0) + struct.pack("=HH", 6, 9) + b"\0\0\0\0" + struct.pack("=HH", 11, 1) + hdr
    two = _nlmsg((3 << 8) | 0, body) + _nlmsg(2, struct.pack("=i", -22) + b"\0" * 16)
    assert list(netdelay.parse(two)) == [((3 << 8) | 0, 0xA0B0C0D0), (2, -22)]
    assert list(netdelay.parse(b"\x01\x02")) == []  # a cut message yields nothing, raises nothing


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("iptables", path=LAB_PATH) is None:
        return "needs iptables (scripts/lab-setup.sh --ci)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here"
    return None


ECHO = """
import socket, sys, time
if sys.argv[1] == "serve":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.231.0.2", 9999))
    while True:
        d, a = s.recvfrom(2000); s.sendto(d, a)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
rtts = []
for _ in range(8):
    t = time.monotonic(); s.sendto(b"x" * 64, ("10.231.0.2", 9999))
    try:
        s.recvfrom(2000); rtts.append((time.monotonic() - t) * 1000)
    except socket.timeout:
        pass
    time.sleep(0.02)
print(" ".join(f"{r:.2f}" for r in rtts))
"""


@pytest.mark.skipif(_netns_unavailable() is not None, reason=_netns_unavailable() or "")
def test_a_real_queue_delays_each_received_packet(tmp_path: Path):
    a, b = f"mnd-{os.getpid()}-a", f"mnd-{os.getpid()}-b"
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    procs: list[subprocess.Popen] = []

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=20)

    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", "ndA", "netns", a, "type", "veth", "peer", "name", "ndB", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.231.0.1/24", "dev", "ndA")
        sh("ip", "-n", b, "addr", "add", "10.231.0.2/24", "dev", "ndB")
        sh("ip", "-n", a, "link", "set", "ndA", "up")
        sh("ip", "-n", b, "link", "set", "ndB", "up")
        procs.append(subprocess.Popen(["ip", "netns", "exec", b, sys.executable, str(script), "serve"]))
        time.sleep(0.3)

        def rtts() -> list[float]:
            out = subprocess.run(["ip", "netns", "exec", a, sys.executable, str(script), "ask"],
                                 capture_output=True, text=True, timeout=60).stdout
            return [float(x) for x in out.split()]

        plain = rtts()
        assert len(plain) == 8 and max(plain) < 20
        # The queue on b's receive side, as set_conditions adds it; with nothing bound it lets packets pass.
        sh("ip", "netns", "exec", b, "iptables", "-A", "INPUT", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass")
        assert len(rtts()) == 8
        log = tmp_path / "netdelay.log"
        with open(log, "w") as out:
            procs.append(subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-m", "multa_broker.lab.netdelay",
                                           "--delay-ms", "60"], stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 15
        while "bound" not in log.read_text():
            assert procs[-1].poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        delayed = rtts()
        assert len(delayed) == 8 and min(delayed) >= 59 and sorted(delayed)[4] < 120, delayed
        procs[-1].terminate()
        procs[-1].wait(10)
        assert "8 packets delayed, 0 receive overruns" in log.read_text()  # one per request: the replies went to a, undelayed
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
