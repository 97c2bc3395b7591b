"""``multa bridge``: configuration file handling, and the real process under signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multa_broker.bridge import config
from multa_broker.bench.fakezeek import FakeZeek
from multa_broker.errors import MultaError

from support.bridge import make_flow, wait_until, write_tiny_model

REPO = Path(__file__).resolve().parent.parent


def multa(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multa_broker", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, **kw)


def test_print_config_lists_every_key_with_a_comment_and_reads_back():
    out = multa("bridge", "--print-config")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert config.from_dict(data) == config.BridgeConfig()
    leaves = [line for line in out.stdout.splitlines() if ":" in line and not line.rstrip().endswith(":")
              and not line.startswith("#")]
    assert leaves and all("  # " in line for line in leaves)

    def count(obj) -> int:
        import dataclasses

        return sum(count(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name)) else 1
                   for f in dataclasses.fields(obj))
    assert len(leaves) == count(config.BridgeConfig())


def test_print_config_shows_the_files_values(tmp_path):
    f = tmp_path / "multa.yaml"
    f.write_text("batch:\n  max_flows: 64\ntopics:\n  per_node: true\n")
    out = multa("bridge", "-c", str(f), "--print-config")
    cfg = config.from_dict(yaml.safe_load(out.stdout))
    assert cfg.batch.max_flows == 64 and cfg.topics.per_node is True and cfg.batch.max_wait_ms == 1.0


@pytest.mark.parametrize("text,message", [
    ("batch:\n  max_flowz: 3\n", "multa.yaml: unknown key batch.max_flowz"),
    ("batch:\n  max_flows: many\n", "multa.yaml: key batch.max_flows must be an integer, got 'many'"),
    ("transport: carrier-pigeon\n", "multa.yaml: key transport must be 'websocket' or 'native'"),
    ("queue:\n  drop: random\n", "key queue.drop must be 'newest' or 'oldest'"),
    ("websocket:\n  verify: 'no'\n", "key websocket.verify must be true/false"),
    ("websocket:\n  url: http://zeek:80/\n", "websocket.url must start with ws:// or wss://"),
    ("reconnect: 5\n", "key reconnect must be a mapping"),
    ("batch: [\n", "multa.yaml: line 2 not valid YAML"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, capsys, text, message):
    from multa_broker.cli import main

    f = tmp_path / "multa.yaml"
    f.write_text(text)
    assert main(["bridge", "-c", str(f), "--print-config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_missing_config_file():
    with pytest.raises(MultaError, match="nope.yaml: cannot read config"):
        config.load("/nonexistent/nope.yaml")


def test_check_loads_the_model(tmp_path):
    model = write_tiny_model(tmp_path / "m")
    f = tmp_path / "multa.yaml"
    f.write_text(f"model:\n  path: {model}\n")
    out = multa("bridge", "-c", str(f), "--check")
    assert out.returncode == 0, out.stderr
    assert "model tiny/1" in out.stdout
    f.write_text(f"model:\n  path: {tmp_path / 'missing'}\n")
    out = multa("bridge", "-c", str(f), "--check")
    assert out.returncode == 1 and "missing" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_process_reloads_on_sighup_and_drains_on_sigterm(tmp_path):
    """The real ``multa bridge`` process: flows -> results, SIGHUP reload, SIGTERM -> exit 0."""
    model = write_tiny_model(tmp_path / "store" / "tiny" / "1")

    async def main():
        zeek = await FakeZeek().start()
        f = tmp_path / "multa.yaml"
        f.write_text(yaml.safe_dump({
            "websocket": {"url": zeek.url},
            "model": {"path": str(model), "poll_s": 0},     # reload on SIGHUP only
            "metrics": {"enabled": False},
            "reconnect": {"initial_s": 0.05, "max_s": 0.2},
        }))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "multa_broker", "bridge", "-c", str(f), cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await zeek.wait_subscribed(30)
            await zeek.send_flows([make_flow(i) for i in range(20)])
            await wait_until(lambda: len(zeek.results()) == 20, 20)
            write_tiny_model(model, version="2")
            proc.send_signal(signal.SIGHUP)
            # Reload happens between batches; keep sending until the new model answers.
            for i in range(100):
                await zeek.send_flows([make_flow(100 + i)])
                await asyncio.sleep(0.05)
                if zeek.results()[-1].model == "tiny/2":
                    break
            assert zeek.results()[-1].model == "tiny/2"
            await zeek.send_flows([make_flow(i) for i in range(1000, 1300)])
            # One message: once any of its results is back, the bridge has read all 300.
            first = make_flow(1000).uid
            await wait_until(lambda: any(r.uid == first for r in zeek.results()), 20)
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 30)
            err = (await proc.stderr.read()).decode()
            assert rc == 0, err
            assert "reloaded model (SIGHUP): tiny/1 -> tiny/2" in err
            assert "stopped:" in err
            uids = {r.uid for r in zeek.results()}
            assert all(make_flow(i).uid in uids for i in range(1000, 1300)), "drain lost flows"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await zeek.stop()
    asyncio.run(asyncio.wait_for(main(), 90))
