"""The bridge service: Zeek's flows in, the model's verdicts out (docs/bridge.md).

Four asyncio tasks share one event loop:

* **link** -- connects (backoff with jitter on failure), flushes results that
  waited while Zeek was away, then reads messages and queues valid flows;
* **batcher** -- takes up to ``batch.max_flows`` flows, or fewer once the
  oldest has waited ``batch.max_wait_ms``, runs the model in a worker thread
  (so network I/O never waits for it) and publishes the results;
* **watcher** -- reloads the model on SIGHUP or when its files change, and
  swaps it in between batches;
* the caller's stop: SIGTERM drains the queue, then :meth:`run` returns 0.

Memory is bounded by the flow queue (``queue.max_flows``, drop policy
``queue.drop``), the pending-results buffer (``queue.max_pending_results``),
the transport's receive buffer and the largest message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from multa_broker.bridge import model as modelmod
from multa_broker.bridge.backoff import Backoff
from multa_broker.bridge.codec import CodecError
from multa_broker.bridge.config import BridgeConfig
from multa_broker.bridge.events import check_result
from multa_broker.bridge.metrics import BridgeMetrics
from multa_broker.bridge.queues import FlowQueue, PendingResults, _Queued  # noqa: F401 (re-exported)
from multa_broker.bridge.ratelog import RateLimitedLog
from multa_broker.bridge.runner import make_runner
from multa_broker.bridge.transport import Inbound, Route, Transport, TransportClosed
from multa_broker.errors import MultaError
from multa_broker.flow import MAX_N
from multa_broker.protocol import FLOWS_EVENT, NODE_RESULT_TOPIC_PREFIX, PACKED_FLOWS_EVENT, Result
from multa_broker.store import PinMismatch

log = logging.getLogger("multa.bridge")

#: ``flows_contract`` label of each FlowsMessage.versions key.
_VERSION_LABELS = {1: "1", 2: "2"}

#: Batches handed to the model at once (one computing, one waiting).
INFLIGHT_BATCHES = 2


TransportFactory = Callable[[BridgeConfig], Transport]


def make_transport(cfg: BridgeConfig) -> Transport:
    if cfg.transport == "native":
        from multa_broker.bridge.native import NativeTransport

        return NativeTransport(cfg.native)
    from multa_broker.bridge.websocket import WebSocketTransport

    return WebSocketTransport(cfg.websocket)


class BridgeService:
    """One bridge. ``await run()`` serves until :meth:`stop`; then drains and returns 0."""

    def __init__(self, cfg: BridgeConfig, *, loader: modelmod.Loader | None = None,
                 transport_factory: TransportFactory | None = None,
                 metrics: BridgeMetrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or BridgeMetrics()
        self._loader = loader  # None: multa's Classifier (in a worker process unless model.worker: thread)
        self._make_transport = transport_factory or make_transport
        self._ratelog = RateLimitedLog(log, cfg.log_interval_s)
        self.classifier: modelmod.ClassifierLike | None = None
        self.metrics_port: int | None = None
        self._queue: FlowQueue | None = None
        self._pending = PendingResults(cfg.queue.max_pending_results)
        self._transport: Transport | None = None
        self._inflight = 0
        self._stopping = False
        self._ever_connected = False
        self._v1_nodes: set[str] = set()  # nodes seen sending flow contract version 1 (logged once each)

    # ------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Begin a graceful stop (SIGTERM): stop accepting flows, drain, return from run()."""
        if not self._stopping:
            log.info("stopping: draining %d queued flows (at most %.1fs)",
                     len(self._queue or ()), self.cfg.drain_timeout_s)
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def request_reload(self) -> None:
        """Reload the model before the next batch (SIGHUP)."""
        if self._reload_event is not None:
            self._reload_event.set()

    _stop_event: asyncio.Event | None = None
    _reload_event: asyncio.Event | None = None

    def load_model(self) -> modelmod.ClassifierLike:
        """Load the configured model here and now (``--check``); MultaError if it cannot be used."""
        path = self.cfg.model.path
        try:
            clf = modelmod.load_pinned(self._loader, path, self.cfg.model.thresholds, self.cfg.model.sha256)
        except MultaError:
            raise
        except Exception as e:  # torch/pickle/IO errors: the user needs one line, not a traceback
            raise MultaError(f"{path}: cannot load model: {type(e).__name__}: {e}") from None
        return self._checked(clf)

    def _checked(self, clf: Any) -> Any:
        if not 1 <= int(clf.n) <= MAX_N:
            raise MultaError(f"{self.cfg.model.path}: model reads {clf.n} packets, outside 1..{MAX_N}")
        return clf

    async def _load(self) -> Any:
        path = self.cfg.model.path
        try:
            return self._checked(await self._runner.load(path, self.cfg.model.thresholds, self.cfg.model.sha256))
        except MultaError as e:
            msg = str(e)
            raise type(e)(msg if path in msg else f"{path}: cannot load model: {msg}") from None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._reload_event = asyncio.Event()
        self._queue = FlowQueue(self.cfg.queue.max_flows, self.cfg.queue.drop)
        if self._stopping:
            self._stop_event.set()
        # A transport that cannot exist at all (native without Broker's bindings)
        # is a configuration error: fail now, not in the reconnect loop.
        self._make_transport(self.cfg)
        self._runner = make_runner(self.cfg.model.worker, self.cfg.model.threads, self._loader)
        try:
            self.classifier = await self._load()
        except BaseException:
            await self._runner.close()
            raise
        log.info("model %s: tasks %s, N=%d (%s)", self.classifier.name, ",".join(self.classifier.tasks),
                 self.classifier.n, type(self._runner).__name__)
        try:
            server = self._start_metrics()
        except BaseException:
            await self._runner.close()
            raise
        # Reload checks stat() the model's files in this thread, off the loop.
        self._stat_pool = ThreadPoolExecutor(1, "multa-stat")
        tasks = [asyncio.create_task(self._link(), name="link"),
                 asyncio.create_task(self._batcher(), name="batcher"),
                 asyncio.create_task(self._watch_model(), name="watcher")]
        stop = asyncio.create_task(self._stop_event.wait())
        failed = False
        try:
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:  # a task that ended by itself has a bug: say so, drain, exit 1
                if t is not stop:
                    failed = True
                    exc = t.exception()
                    log.error("internal error: task %s ended: %r", t.get_name(), exc,
                              exc_info=(type(exc), exc, exc.__traceback__) if exc else None)
            self._stopping = True
            await self._drain(loop.time() + self.cfg.drain_timeout_s)
        finally:
            stop.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(stop, *tasks, return_exceptions=True)
            if self._transport is not None:
                await self._transport.close()
            await self._runner.close()
            self._stat_pool.shutdown(wait=False)
            if server is not None:
                server.shutdown()
                server.server_close()
            self.metrics.connected.set(0)
        s = self.metrics.summary()
        log.info("stopped: %s", ", ".join(f"{k}={int(v)}" for k, v in s.items() if v or k.startswith("flows")))
        return 1 if failed else 0

    def _start_metrics(self) -> Any:
        if not self.cfg.metrics.enabled:
            return None
        from prometheus_client import start_http_server

        try:
            ret = start_http_server(self.cfg.metrics.port, self.cfg.metrics.address,
                                    registry=self.metrics.registry)
        except OSError as e:
            raise MultaError(f"metrics: cannot listen on {self.cfg.metrics.address}:{self.cfg.metrics.port}: "
                             f"{e.strerror or e}") from None
        if not isinstance(ret, tuple):  # prometheus-client before 0.20 returns nothing to stop
            self.metrics_port = self.cfg.metrics.port
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics.address, self.metrics_port)
            return None
        server = ret[0]
        self.metrics_port = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", self.cfg.metrics.address, self.metrics_port)
        return server

    async def _drain(self, deadline: float) -> None:
        """Finish queued and in-flight flows and send pending results, until ``deadline``."""
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while loop.time() < deadline:
            if not self._queue and not self._inflight and not self._pending:
                return
            self._queue.changed.set()  # wake the batcher: no point waiting for a fuller batch
            await asyncio.sleep(0.01)
        left = self._queue.clear() + len(self._pending) + self._inflight
        if left:
            log.warning("drain timeout: %d flows got no result", left)
            self.metrics.flows_dropped.labels("shutdown").inc(left)
            self._pending = PendingResults(self.cfg.queue.max_pending_results)
            self._inflight = 0
        self.metrics.queue_depth.set(0)
        self.metrics.pending_results.set(0)

    # ------------------------------------------------------------ link: connect and read

    async def _link(self) -> None:
        backoff = Backoff(self.cfg.reconnect)
        assert self._stop_event is not None
        while True:
            transport = self._make_transport(self.cfg)
            try:
                peer = await transport.connect(self.cfg.topics.flows)
            except (TransportClosed, OSError, asyncio.TimeoutError) as e:
                await transport.close()
                self.metrics.connect_failures.inc()
                delay = backoff.next()
                self._ratelog.warning("connect", f"{e}; retrying in {delay:.1f}s")
                await asyncio.sleep(delay)
                continue
            t_up = time.monotonic()
            self._transport = transport
            self.metrics.connected.set(1)
            if self._ever_connected:
                self.metrics.reconnects.inc()
            self._ever_connected = True
            # A peer that accepts and then drops us at once must not get a log line
            # (or two) per attempt: both lines go through the rate limiter.
            self._ratelog.info("connected", f"connected to {peer} via {transport.kind}, subscribed to "
                                            f"{','.join(self.cfg.topics.flows)}")
            try:
                await self._flush_pending(transport)
                while True:
                    msg = await transport.receive()
                    self._handle(msg)
                    # recv() returns without yielding while messages are buffered;
                    # yield so the batcher runs between messages under load.
                    await asyncio.sleep(0)
            except TransportClosed as e:
                if e.dropped:  # one message ended the connection: counted and logged as that message
                    self._malformed(e.dropped, str(e))
                else:
                    self._ratelog.warning("lost", f"lost Zeek: {e}")
            finally:
                self._transport = None
                self.metrics.connected.set(0)
                await transport.close()
            # Start the backoff over only after a connection that lasted; otherwise a
            # peer that acks and closes would be retried at initial_s forever.
            if time.monotonic() - t_up >= self.cfg.reconnect.reset_after_s:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    def _handle(self, msg: Inbound) -> None:
        m = self.metrics
        if msg.kind == "error":
            m.peer_errors.labels(msg.code).inc()
            self._ratelog.warning(f"peer:{msg.code}", f"Zeek reported an error: {msg.code}: {msg.detail}")
            return
        if msg.kind == "malformed":
            self._malformed(msg.code, msg.detail)
            return
        if msg.name != FLOWS_EVENT and msg.name != PACKED_FLOWS_EVENT:
            self._malformed("unexpected_event", f"event {msg.name!r} on {msg.topic}")
            return
        assert msg.parse_flows is not None and self._queue is not None
        try:
            fm = msg.parse_flows(msg.args, MAX_N)
        except CodecError as e:
            self._malformed("bad_arguments", str(e))
            return
        except Exception as e:  # a shape no check foresaw: skip it, never stop reading
            self._malformed("bad_arguments", f"unreadable {msg.name} arguments: {e!r}")
            return
        m.flows_in.inc(len(fm.flows) + len(fm.rejected))
        m.flows_encoding.labels(fm.encoding).inc(len(fm.flows) + len(fm.rejected))
        for version, n in fm.versions.items():
            m.flows_contract.labels(_VERSION_LABELS.get(version, "unknown")).inc(n)
        if fm.versions.get(1):
            self._contract_v1(fm.node)
        if fm.rejected:
            invalid = len(fm.rejected) - fm.rejected_context - fm.rejected_packing
            if invalid:
                m.flows_dropped.labels("invalid").inc(invalid)
            if fm.rejected_context:
                m.flows_dropped.labels("bad_context").inc(fm.rejected_context)
            if fm.rejected_packing:
                m.flows_dropped.labels("bad_packing").inc(fm.rejected_packing)
            self._ratelog.warning("invalid", f"dropped {len(fm.rejected)} invalid flow(s) from node "
                                             f"{fm.node!r}, e.g. {fm.rejected[0]}")
        if not fm.flows:
            return
        without = sum(1 for f in fm.flows if f.ctx is None)
        if without:
            m.flows_without_context.inc(without)
        if self._stopping:
            m.flows_dropped.labels("shutdown").inc(len(fm.flows))
            self._ratelog.warning("shutdown", f"stopping: dropped {len(fm.flows)} flow(s) that arrived late")
            return
        n = self.classifier.n if self.classifier is not None else MAX_N
        now = time.monotonic()
        items = []
        for f in fm.flows:
            if len(f.sizes) > n:
                # The model reads only the first n packets; keeping more would only cost memory.
                f.sizes, f.dirs, f.iats = f.sizes[:n], f.dirs[:n], f.iats[:n]
                m.flows_truncated.inc()
            items.append(_Queued(f, fm.node, now, fm.packed_results))
        dropped = self._queue.put(items)
        if dropped:
            m.flows_dropped.labels("queue_full").inc(dropped)
            self._ratelog.warning("queue_full", f"overload: queue full ({self._queue.max_flows} flows), "
                                                f"dropped {dropped} ({self.cfg.queue.drop} first)")
        m.queue_depth.set(len(self._queue))

    def _contract_v1(self, node: str) -> None:
        """Say once per node that it sends contract version 1 (an older Zeek package)."""
        if node in self._v1_nodes or len(self._v1_nodes) >= 1024:
            return
        self._v1_nodes.add(node)
        log.warning("mixed deployment: flows without host context: node %r sends flow contract version 1 "
                    "(an older multa Zeek package); its flows are classified without host context "
                    "(multa_bridge_flows_without_context_total). Upgrade the Zeek package on that node.", node)

    def _malformed(self, reason: str, detail: str) -> None:
        self.metrics.malformed.labels(reason).inc()
        self._ratelog.warning(f"malformed:{reason}", f"skipped a malformed message ({reason}): {detail}"[:400])

    # ------------------------------------------------------------ batcher: model and results

    async def _batcher(self) -> None:
        q = self._queue
        assert q is not None
        max_flows, max_wait = self.cfg.batch.max_flows, self.cfg.batch.max_wait_ms / 1000.0
        # Two batches in flight: while the model works on one, the next is encoded
        # and queued, and the previous one's results go out, so the model never
        # waits for the event loop. Flows arriving meanwhile wait in the queue and
        # make the next batch bigger.
        slots = asyncio.Semaphore(INFLIGHT_BATCHES)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()
                while not len(q):
                    q.changed.clear()
                    await q.changed.wait()
                # Wait for a full batch, but never past the oldest flow's max_wait.
                while len(q) < max_flows and not self._stopping:
                    remaining = q.oldest() + max_wait - time.monotonic()  # type: ignore[operator]
                    if remaining <= 0:
                        break
                    q.changed.clear()
                    try:
                        await asyncio.wait_for(q.changed.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                items = q.take(max_flows)
                self.metrics.queue_depth.set(len(q))
                self._inflight += len(items)
                task = asyncio.create_task(self._process(items))
                running.add(task)
                task.add_done_callback(lambda t: (running.discard(t), slots.release()))
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _process(self, items: list[_Queued]) -> None:
        m = self.metrics
        clf = self.classifier
        assert clf is not None
        flows = [it.flow for it in items]
        t0 = time.perf_counter()
        try:
            # Runners serve calls in order and load a new model only between
            # batches, so each batch is classified by exactly one model.
            results = await self._runner.classify(flows)
        except Exception as e:  # a model failure loses this batch, never the service
            m.flows_dropped.labels("inference_error").inc(len(items))
            self._inflight -= len(items)
            self._ratelog.warning("inference", f"model {clf.name} failed on a batch of {len(items)}: {e!r}")
            return
        m.inference_seconds.observe(time.perf_counter() - t0)
        m.batch_size.observe(len(items))
        by_route: dict[Route, list[Result]] = {}
        arrivals: list[float] = []
        for it, r in zip(items, results):
            try:
                check_result(r)
            except ValueError as e:
                m.flows_dropped.labels("bad_result").inc()
                self._inflight -= 1
                self._ratelog.warning("bad_result", str(e))
                continue
            topic = NODE_RESULT_TOPIC_PREFIX + it.node if self.cfg.topics.per_node else self.cfg.topics.results
            # Answered in the encoding the node reads: packed to packed flows of version 2.
            by_route.setdefault(Route(topic, it.packed), []).append(r)
            arrivals.append(it.t_in)
        for route, rs in by_route.items():
            await self._send(route, rs)
            self._inflight -= len(rs)  # now counted as out, or held in the pending buffer
        now = time.monotonic()
        for t_in in arrivals:
            m.flow_latency_seconds.observe(now - t_in)

    async def _send(self, route: Route, results: list[Result]) -> None:
        t = self._transport
        if t is not None:
            try:
                await t.publish_results(route, results)
                self.metrics.flows_out.inc(len(results))
                return
            except TransportClosed as e:
                log.warning("could not send %d results: %s; keeping them until Zeek is back", len(results), e)
        self._keep(route, results)

    def _keep(self, route: Route, results: list[Result]) -> None:
        over = self._pending.add(route, results)
        if over:
            self.metrics.flows_dropped.labels("pending_overflow").inc(over)
            self._ratelog.warning("pending_overflow", f"Zeek unreachable: pending results full "
                                                      f"({self._pending.limit}), dropped the {over} oldest")
        self.metrics.pending_results.set(len(self._pending))

    async def _flush_pending(self, transport: Transport) -> None:
        if not self._pending:
            return
        n = len(self._pending)
        while self._pending:
            route, rs = self._pending.take(self.cfg.batch.max_flows)
            try:
                await transport.publish_results(route, rs)
            except TransportClosed:
                self._pending.put_back(route, rs)
                self.metrics.pending_results.set(len(self._pending))
                raise
            self.metrics.flows_out.inc(len(rs))
            self.metrics.pending_results.set(len(self._pending))
        log.info("sent %d results kept while Zeek was away", n)

    # ------------------------------------------------------------ watcher: hot reload

    async def _watch_model(self) -> None:
        assert self._reload_event is not None
        path, poll = self.cfg.model.path, self.cfg.model.poll_s
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(self._stat_pool, modelmod.fingerprint, path)
        while True:
            try:
                await asyncio.wait_for(self._reload_event.wait(), poll if poll > 0 else None)
            except asyncio.TimeoutError:
                pass
            asked = self._reload_event.is_set()
            self._reload_event.clear()
            fp = await loop.run_in_executor(self._stat_pool, modelmod.fingerprint, path)
            if not asked and fp == last:
                continue
            if not asked:
                # A copy may still be in progress: reload once the files stop changing.
                await asyncio.sleep(min(0.2, poll))
                again = await loop.run_in_executor(self._stat_pool, modelmod.fingerprint, path)
                if again != fp:
                    continue
            last = fp
            await self._reload("SIGHUP" if asked else "model files changed")

    async def _reload(self, why: str) -> None:
        old = self.classifier
        try:
            new = await self._load()
        except PinMismatch as e:
            # Not the archive the operator approved (model.sha256): never served.
            self.metrics.reloads.labels("refused").inc()
            log.error("reload (%s) refused, keeping model %s: %s", why, old.name if old else "?", e)
            return
        except Exception as e:
            self.metrics.reloads.labels("failed").inc()
            log.error("reload (%s) failed, keeping model %s: %s", why, old.name if old else "?", e)
            return
        self.classifier = new
        self.metrics.reloads.labels("ok").inc()
        log.info("reloaded model (%s): %s -> %s", why, old.name if old else "?", new.name)
