"""Processes the lab starts: every one tracked by PID, bounded in time, stopped by PID.

Each command runs as ``ip netns exec NS argv...`` in its own session (process
group), so stopping it also stops the children it forked (hydra's workers,
nginx's worker). Nothing is ever killed by name.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

log = logging.getLogger("multa.lab.procs")

#: The environment every lab process gets: no proxies, no inherited secrets.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def lab_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": BASE_PATH, "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb"}
    if extra:
        env.update(extra)
    return env


@dataclass
class Daemon:
    name: str
    ns: str
    proc: subprocess.Popen
    log_path: Path
    #: Where this start's output begins in ``log_path``: the log is appended to, and a resumed
    #: run starts the same names again, so what an earlier attempt wrote must not count.
    log_start: int = 0

    def log_text(self) -> str:
        """What the daemon has written since it started ('' before its log exists)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Result:
    """Outcome of a client command that ran to completion or to its timeout."""

    argv: list[str]
    returncode: int | None  # None when it was stopped at its timeout
    output: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group led by ``proc``, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        # The leader is gone but forked children may remain in its group.
        _signal_group(proc.pid, signal.SIGKILL)
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("process %d did not exit after SIGKILL", proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Procs:
    """Starts daemons and clients inside namespaces; :meth:`stop_all` ends every one of them."""

    def __init__(self, log_dir: Path, env: dict[str, str], client_log: str = "clients"):
        self.log_dir = log_dir
        #: Every client's command line, exit status and output, in order.
        self.client_log = log_dir / f"{client_log}.log"
        self.env = env
        self.daemons: list[Daemon] = []
        self._running_clients: set[subprocess.Popen] = set()
        log_dir.mkdir(parents=True, exist_ok=True)

    def _argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *[str(a) for a in argv]]

    def start(self, ns: str, argv: Sequence[str], name: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Daemon:
        """Start a long-running process; its output goes to ``log_dir/name.log``."""
        log_path = self.log_dir / f"{name}.log"
        full = self._argv(ns, argv)
        log.debug("start %s in %s: %s", name, ns, " ".join(full))
        with open(log_path, "ab") as out:
            start = out.tell()
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env or self.env, cwd=cwd, start_new_session=True)
        d = Daemon(name, ns, proc, log_path, start)
        self.daemons.append(d)
        return d

    def stop(self, d: Daemon, grace: float = 3.0) -> None:
        _stop_group(d.proc, grace)
        if d in self.daemons:
            self.daemons.remove(d)

    def run(self, ns: str, argv: Sequence[str], timeout: float, env: dict[str, str] | None = None,
            cwd: Path | None = None, input: bytes | None = None) -> Result:
        """Run a client to completion; at ``timeout`` seconds its whole group is stopped."""
        full = self._argv(ns, argv)
        log.debug("run in %s (timeout %.0fs): %s", ns, timeout, " ".join(full))
        t0 = time.monotonic()
        proc = subprocess.Popen(full, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env or self.env,
                                cwd=cwd, start_new_session=True)
        self._running_clients.add(proc)
        try:
            out, _ = proc.communicate(input=input, timeout=timeout)
            rc: int | None = proc.returncode
            # Forked helpers left behind in the group go too.
            _signal_group(proc.pid, signal.SIGKILL)
        except subprocess.TimeoutExpired:
            _stop_group(proc, grace=2.0)
            out, _ = proc.communicate()
            rc = None
            log.info("%s stopped at its %.0fs timeout", argv[0], timeout)
        except BaseException:
            # Ctrl-C or SIGTERM while waiting: the client is in its own session, stop it here.
            _stop_group(proc, grace=1.0)
            raise
        finally:
            self._running_clients.discard(proc)
        result = Result([str(a) for a in argv], rc, out.decode("utf-8", "replace"), time.monotonic() - t0)
        with open(self.client_log, "a", encoding="utf-8") as f:
            f.write(f"$ [{ns}] {' '.join(result.argv)[:2000]}\n")
            f.write(result.output[-4000:])
            f.write(f"\n# exit {rc if rc is not None else 'timeout'} after {result.seconds:.1f}s\n")
        return result

    def stop_all(self) -> None:
        """Stop every client and daemon still running, newest first."""
        for proc in list(self._running_clients):
            _stop_group(proc, grace=1.0)
        for d in reversed(list(self.daemons)):
            _stop_group(d.proc, grace=3.0)
        self.daemons.clear()
