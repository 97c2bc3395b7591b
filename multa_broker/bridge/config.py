"""The bridge's configuration: typed dataclasses, read from YAML, every key defaulted.

``multa bridge --print-config`` prints :func:`default_yaml` -- every key with
its default and a comment -- which is also a valid config file. Loading checks
each key against the dataclasses: an unknown key or a value of the wrong type
is a one-line :class:`MultaError` that names the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from multa_broker.errors import MultaError
from multa_broker.protocol import DEFAULT_FLOW_TOPIC, DEFAULT_RESULT_TOPIC


def _f(default: Any, doc: str) -> Any:
    """A dataclass field with a comment for ``--print-config``."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class WebSocketConfig:
    url: str = _f("ws://127.0.0.1:27999/v1/messages/json",
                  "Zeek's WebSocket API (Cluster::listen_websocket); wss:// for TLS")
    ca_file: Union[str, None] = _f(None, "wss: CA bundle that signed Zeek's certificate (null: system CAs)")
    cert_file: Union[str, None] = _f(None, "wss: client certificate, if Zeek asks for one")
    key_file: Union[str, None] = _f(None, "wss: the client certificate's private key")
    verify: bool = _f(True, "wss: check Zeek's certificate and host name (false only for testing)")
    open_timeout_s: float = _f(10.0, "give up a connection attempt (TCP, TLS, WebSocket, Broker ack) after this")
    ping_interval_s: Union[float, None] = _f(20.0, "WebSocket keepalive ping period (null: no pings)")
    ping_timeout_s: Union[float, None] = _f(
        None, "no pong within this long after a ping (writing it included) drops the connection and "
              "reconnects (null: ping_interval_s)")
    max_message_bytes: int = _f(16 * 1024 * 1024,
                                "largest message accepted from Zeek (16 MiB); a bigger one is counted as "
                                "malformed (too_big) and closes the connection, then: reconnect "
                                "(100 flows of 64 packets are about 1 MB)")
    max_queue: int = _f(16, "messages read ahead of the bridge; beyond this TCP pushes back on Zeek "
                            "(memory bound: max_queue x max_message_bytes)")
    use_msgspec: bool = _f(True, "parse JSON with msgspec when installed (about 5x faster than json)")


@dataclass
class NativeConfig:
    host: str = _f("127.0.0.1", "Zeek's Broker listener (Broker::listen)")
    port: int = _f(9999, "its port")
    python_path: Union[str, None] = _f(
        None, "directory appended to sys.path before importing broker, e.g. "
              "/opt/zeek/lib/zeek/python (Debian's python3-broker: /usr/lib/python3/dist-packages)")


@dataclass
class TopicsConfig:
    flows: list[str] = _f([DEFAULT_FLOW_TOPIC],
                          "topic prefixes to subscribe to (one shard of Multa::shards=4: [multa/flows/0-of-4])")
    results: str = _f(DEFAULT_RESULT_TOPIC, "where results go unless per_node is set")
    per_node: bool = _f(False, "answer each node on multa/results/<node> instead of results")


@dataclass
class ModelConfig:
    path: str = _f("default", "stored model: a model_store/<name>/<version> dir, its model.pt, "
                              "or default (the store's DEFAULT entry; $MULTA_MODEL_STORE)")
    thresholds: Union[str, float, None] = _f(
        None, "open-set thresholds: 'service=0.6,threat=0.8' or one number for all (null: the manifest's)")
    poll_s: float = _f(2.0, "check the model's files for changes this often (0: only on SIGHUP)")
    worker: Literal["process", "thread"] = _f(
        "process", "run the model in a worker process (no GIL shared with the network side) or a thread")
    threads: int = _f(1, "torch threads for inference (the event loop needs a core too)")
    sha256: Union[str, None] = _f(
        None, "sha256 of the approved model.pt (sha256sum model.pt): any other archive is refused at start "
              "and on reload, whatever its manifest says (null: any model whose manifest checks pass)")


@dataclass
class BatchConfig:
    max_flows: int = _f(256, "run the model once this many flows wait ...")
    max_wait_ms: float = _f(1.0, "... or when the oldest waiting flow is this old (Zeek batches already; "
                                 "while the model is busy, flows pile up into bigger batches anyway)")


@dataclass
class QueueConfig:
    max_flows: int = _f(20000, "flows waiting for the model at most (about 1 s at 20k flows/s)")
    drop: Literal["newest", "oldest"] = _f(
        "newest", "when full: newest rejects arriving flows, oldest evicts the longest-waiting ones")
    max_pending_results: int = _f(
        50000, "results kept while Zeek is unreachable; past this the oldest are dropped")


@dataclass
class ReconnectConfig:
    initial_s: float = _f(0.5, "first wait after a failed or lost connection")
    max_s: float = _f(30.0, "longest wait between attempts")
    multiplier: float = _f(2.0, "each failed attempt multiplies the wait by this")
    jitter: float = _f(0.2, "each wait is randomised by +- this fraction")
    reset_after_s: float = _f(10.0, "the wait starts again from initial_s only after a connection lived this long")


@dataclass
class MetricsConfig:
    enabled: bool = _f(True, "serve Prometheus metrics over HTTP")
    address: str = _f("127.0.0.1", "listen address for /metrics")
    port: int = _f(9464, "listen port for /metrics (0: any free port)")


@dataclass
class BridgeConfig:
    transport: Literal["websocket", "native"] = _f(
        "websocket", "websocket: Zeek's WebSocket API (JSON v1); native: Broker's Python bindings")
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    native: NativeConfig = field(default_factory=NativeConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    drain_timeout_s: float = _f(10.0, "on SIGTERM, finish queued flows for at most this long, then exit 0")
    log_interval_s: float = _f(10.0, "repeated warnings (malformed messages, bad flows) at most once per this")

    def check(self) -> None:
        """Raise ValueError for values that have the right type but make no sense."""
        positive = {
            "batch.max_flows": self.batch.max_flows, "queue.max_flows": self.queue.max_flows,
            "queue.max_pending_results": self.queue.max_pending_results,
            "model.threads": self.model.threads, "websocket.max_message_bytes": self.websocket.max_message_bytes,
            "websocket.max_queue": self.websocket.max_queue,
            "reconnect.initial_s": self.reconnect.initial_s, "reconnect.max_s": self.reconnect.max_s,
            "websocket.open_timeout_s": self.websocket.open_timeout_s,
        }
        for key, v in positive.items():
            if v <= 0:
                raise ValueError(f"{key} must be > 0, got {v}")
        for key, v in {"batch.max_wait_ms": self.batch.max_wait_ms, "model.poll_s": self.model.poll_s,
                       "drain_timeout_s": self.drain_timeout_s, "log_interval_s": self.log_interval_s,
                       "reconnect.jitter": self.reconnect.jitter,
                       "reconnect.reset_after_s": self.reconnect.reset_after_s}.items():
            if v < 0:
                raise ValueError(f"{key} must be >= 0, got {v}")
        if self.reconnect.multiplier < 1:
            raise ValueError(f"reconnect.multiplier must be >= 1, got {self.reconnect.multiplier}")
        if self.reconnect.jitter >= 1:
            raise ValueError(f"reconnect.jitter must be < 1, got {self.reconnect.jitter}")
        for key, v in {"websocket.ping_interval_s": self.websocket.ping_interval_s,
                       "websocket.ping_timeout_s": self.websocket.ping_timeout_s}.items():
            if v is not None and v <= 0:
                raise ValueError(f"{key} must be > 0 or null, got {v}")
        pin = (self.model.sha256 or "").strip().lower()
        if self.model.sha256 is not None and (len(pin) != 64 or pin.strip("0123456789abcdef")):
            raise ValueError(f"model.sha256 must be 64 hex digits (sha256sum model.pt), got {self.model.sha256!r}"[:160])
        if not self.topics.flows:
            raise ValueError("topics.flows must name at least one topic")
        if not 0 <= self.metrics.port <= 65535 or not 0 < self.native.port <= 65535:
            raise ValueError("metrics.port / native.port outside 0..65535")
        if not self.websocket.url.startswith(("ws://", "wss://")):
            raise ValueError(f"websocket.url must start with ws:// or wss://, got {self.websocket.url!r}")


# ---------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return "a list of " + _type_name(get_args(tp)[0]).removeprefix("a ").removeprefix("an ") + "s"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, or TypeError naming ``key`` and what was expected."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arg, key)
            except TypeError:
                pass
    elif origin is Literal:
        if value in get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_convert(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise TypeError(f"key {key} must be {_type_name(tp)}, got {value!r}"[:200])


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = f"key {prefix.rstrip('.')}" if prefix else "the config"
        raise TypeError(f"{where} must be a mapping of keys, got {data!r}"[:200])
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise TypeError(f"unknown key {key} (known here: {', '.join(fields)})")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, f"{key}.")
        else:
            kwargs[name] = _convert(value, tp, key)
    return cls(**kwargs)


def from_dict(data: dict[str, Any] | None, source: str = "<config>") -> BridgeConfig:
    """A checked BridgeConfig from parsed YAML; MultaError names ``source`` and the key."""
    try:
        cfg = _build(BridgeConfig, data if data is not None else {}, "")
        cfg.check()
    except (TypeError, ValueError) as e:
        raise MultaError(f"{source}: {e}") from None
    return cfg


def load(path: str | Path) -> BridgeConfig:
    """Read a YAML config file; every key is optional."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MultaError(f"{path}: cannot read config: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MultaError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', None) or e}") from None
    return from_dict(data, str(path))


# ---------------------------------------------------------------- printing


def _yaml_scalar(v: Any) -> str:
    import yaml

    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _render(obj: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:")
            _render(value, indent + 1, out)
        else:
            out.append(f"{pad}{f.name}: {_yaml_scalar(value)}  # {f.metadata.get('doc', '')}".rstrip())


def to_yaml(cfg: BridgeConfig) -> str:
    """``cfg`` as commented YAML that :func:`load` reads back to an equal config."""
    out = ["# multa bridge configuration (multa bridge --print-config). Every key is optional."]
    _render(cfg, 0, out)
    return "\n".join(out) + "\n"


def default_yaml() -> str:
    return to_yaml(BridgeConfig())
