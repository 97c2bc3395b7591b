"""The bridge's Prometheus metrics, in a registry of its own per service instance.

Accounting rule (checked by the tests): every flow record that arrives in a
``Multa::flows`` event is counted in ``flows_in``; each one ends either in
``flows_out`` (its result was handed to the connection) or in
``flows_dropped{reason}``, or is still in flight (queue, model, pending buffer).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Why a flow got no result. Documented in docs/bridge.md.
DROP_REASONS = (
    "invalid",           # failed type or representation checks
    "bad_context",       # its host context (ctx, contract v2) breaks multa_broker.context's definition
    "bad_packing",       # Multa::packed_flows: its packed string is malformed (or of an unknown version)
    "queue_full",        # overload: the bounded queue was full (policy newest/oldest)
    "pending_overflow",  # Zeek unreachable too long: the pending-results buffer overflowed
    "inference_error",   # the model raised on the batch
    "bad_result",        # the model produced a non-finite score
    "shutdown",          # arrived after SIGTERM, or not finished within drain_timeout_s
)


#: Label values of ``flows_contract`` (``events.FlowsMessage.versions`` keys 1, 2 and 0).
CONTRACT_VERSIONS = ("1", "2", "unknown")


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.flows_in = Counter("multa_bridge_flows_in", "flow records received from Zeek", registry=r)
        self.flows_out = Counter("multa_bridge_flows_out", "results sent to Zeek", registry=r)
        self.flows_dropped = Counter("multa_bridge_flows_dropped", "flows that got no result, by reason",
                                     ["reason"], registry=r)
        self.flows_contract = Counter(
            "multa_bridge_flows_contract", "flow records received, by flow contract version "
            "(1: an older Zeek package, without host context; unknown: a record of neither shape)",
            ["version"], registry=r)
        self.flows_encoding = Counter(
            "multa_bridge_flows_encoding", "flow records received, by encoding (typed: Multa::flows, "
            "packed: Multa::packed_flows)", ["encoding"], registry=r)
        self.flows_without_context = Counter(
            "multa_bridge_flows_without_context",
            "valid flows received without host context (contract version 1, or ctx none)", registry=r)
        self.flows_truncated = Counter("multa_bridge_flows_truncated",
                                       "flows longer than the model's N, cut to their first N packets", registry=r)
        self.batch_size = Histogram("multa_bridge_batch_size", "flows per model call", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
        self.inference_seconds = Histogram(
            "multa_bridge_inference_seconds", "model call wall time per batch", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
        self.flow_latency_seconds = Histogram(
            "multa_bridge_flow_latency_seconds", "time from a flow's arrival to its result being sent",
            registry=r, buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
        self.queue_depth = Gauge("multa_bridge_queue_depth", "flows waiting for the model", registry=r)
        self.pending_results = Gauge("multa_bridge_pending_results",
                                     "results waiting for Zeek to come back", registry=r)
        self.connected = Gauge("multa_bridge_connected", "1 while connected to Zeek", registry=r)
        self.malformed = Counter("multa_bridge_malformed_messages", "messages from Zeek that were skipped",
                                 ["reason"], registry=r)
        self.peer_errors = Counter("multa_bridge_peer_errors",
                                   "error messages from Zeek (it dropped something we sent)", ["code"], registry=r)
        self.reconnects = Counter("multa_bridge_reconnects", "connections re-established after a loss", registry=r)
        self.connect_failures = Counter("multa_bridge_connect_failures", "failed connection attempts", registry=r)
        self.reloads = Counter("multa_bridge_model_reloads", "model reload attempts", ["result"], registry=r)
        for reason in DROP_REASONS:
            self.flows_dropped.labels(reason)
        for version in CONTRACT_VERSIONS:
            self.flows_contract.labels(version)
        for encoding in ("typed", "packed"):
            self.flows_encoding.labels(encoding)
        for result in ("ok", "failed", "refused"):
            self.reloads.labels(result)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), e.g. ``value("multa_bridge_flows_in_total")``."""
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v

    def dropped(self, reason: str | None = None) -> float:
        if reason is not None:
            return self.value("multa_bridge_flows_dropped_total", reason=reason)
        return sum(self.value("multa_bridge_flows_dropped_total", reason=r) for r in DROP_REASONS)

    def summary(self) -> dict[str, float]:
        out = {
            "flows_in": self.value("multa_bridge_flows_in_total"),
            "flows_out": self.value("multa_bridge_flows_out_total"),
            "reconnects": self.value("multa_bridge_reconnects_total"),
            "flows_v1": self.value("multa_bridge_flows_contract_total", version="1"),
            "flows_without_context": self.value("multa_bridge_flows_without_context_total"),
        }
        for reason in DROP_REASONS:
            out[f"dropped_{reason}"] = self.dropped(reason)
        return out
