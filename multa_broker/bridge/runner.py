"""Where the model runs, off the event loop: a thread, or a worker process.

Both runners load a model (a failed load keeps the previous one), classify a
batch of flows into Results, and swap models only between batches because
calls are served one at a time.

* :class:`ThreadRunner` -- one inference thread in the bridge process. Works
  with any classifier (tests plug in their own); the model shares the GIL with
  the event loop.
* :class:`ProcessRunner` -- :mod:`.worker` in a child process: the bridge encodes
  flows (``flow.encode``), the worker returns probabilities, the bridge turns
  them into Results. The worker loads a private copy of the model's files, so a
  worker that dies is restarted with the model it had even if the files on
  disk changed meanwhile (its batch is lost and counted).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from multa_broker.bridge import model as modelmod
from multa_broker.errors import MultaError
from multa_broker.flow import Flow, encode
from multa_broker.protocol import Result

log = logging.getLogger("multa.bridge.runner")
_LEN = struct.Struct("!I")
#: Batches the worker may hold at once (the service keeps two in flight).
SLOTS = 2


def _widen_pipes(proc: asyncio.subprocess.Process) -> None:
    """Grow the pipes to 1 MiB (Linux): a batch (~60 KB) then goes in one write, not a dozen."""
    import fcntl

    setsz = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    for stream in (proc.stdin, proc.stdout):
        transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        try:
            if pipe is not None:
                fcntl.fcntl(pipe.fileno(), setsz, 1 << 20)
        except OSError:  # not Linux, or over /proc/sys/fs/pipe-max-size: the default works too
            pass


class WorkerDied(RuntimeError):
    """The worker process exited; the batch it had is lost."""


class ThreadRunner:
    def __init__(self, loader: modelmod.Loader, threads: int) -> None:
        self._loader = loader
        self._threads = threads
        self._pool = ThreadPoolExecutor(1, "multa-infer", initializer=self._init_thread)
        self._load_pool = ThreadPoolExecutor(1, "multa-load")  # a slow load never delays a batch
        self.model: Any = None

    def _init_thread(self) -> None:
        try:
            import torch

            torch.set_num_threads(self._threads)
        except ImportError:  # a classifier without torch needs no threads setting
            pass

    def _load_sync(self, path: str, thresholds: Any, sha256: str | None = None) -> Any:
        try:
            return modelmod.load_pinned(self._loader, path, thresholds, sha256)
        except MultaError:
            raise
        except Exception as e:  # torch/pickle/IO errors: one line, not a traceback
            raise MultaError(f"{path}: cannot load model: {type(e).__name__}: {e}") from None

    async def load(self, path: str, thresholds: Any, sha256: str | None = None) -> Any:
        """Load (and on success use) the model at ``path``; returns it. MultaError on failure
        (``store.PinMismatch`` when ``sha256`` pins another archive)."""
        loop = asyncio.get_running_loop()
        clf = await loop.run_in_executor(self._load_pool, self._load_sync, path, thresholds, sha256)
        self.model = clf  # swapped on the loop thread: the next batch uses it
        return clf

    async def classify(self, flows: Sequence[Flow]) -> list[Result]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, modelmod.classify, self.model, flows)

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._load_pool.shutdown(wait=False)


class ProcessRunner:
    """The model in :mod:`.worker`, with requests pipelined: the next batch is
    written while the worker computes the current one, answers come back in order."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._proc: asyncio.subprocess.Process | None = None
        self._write_lock = asyncio.Lock()
        # A load takes every slot: it waits for batches in flight, and batches wait for it.
        self._slots = asyncio.Semaphore(SLOTS)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._restart_lock = asyncio.Lock()
        self._source: tuple[str, Any] | None = None  # the snapshot the worker should have loaded
        self._snapshot: Path | None = None
        self.model: modelmod.ModelInfo | None = None

    @staticmethod
    def _copy_model(path: str) -> Path:
        """Copy the stored model (archive + manifest) to a private directory."""
        from multa_broker import store

        src = store.resolve(path)
        dst = Path(tempfile.mkdtemp(prefix="multa-bridge-model-"))
        try:
            for name in (store.MODEL_FILE, store.MANIFEST_FILE):
                shutil.copy2(src / name, dst / name)
        except OSError as e:
            shutil.rmtree(dst, ignore_errors=True)
            raise MultaError(f"{path}: cannot read model files: {e}") from None
        return dst

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._reader is not None \
            and not self._reader.done()

    async def _start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "multa_broker.bridge.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read_replies(self._proc))
        _widen_pipes(self._proc)
        log.info("model worker process %d started", self._proc.pid)

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                (n,) = _LEN.unpack(await proc.stdout.readexactly(_LEN.size))
                reply = pickle.loads(await proc.stdout.readexactly(n))
                fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            while self._waiting:
                fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_exception(WorkerDied("model worker died"))

    async def _call(self, *req: Any) -> Any:
        """One request; its reply (in order); WorkerDied if the worker is gone."""
        data = pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL)
        fut = asyncio.get_running_loop().create_future()
        async with self._write_lock:
            if not self._alive():
                raise WorkerDied("model worker is not running")
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            self._waiting.append(fut)
            try:
                proc.stdin.write(_LEN.pack(len(data)) + data)
                await proc.stdin.drain()
            except (ConnectionError, BrokenPipeError):
                pass  # the reader sees EOF and fails every waiting future
        status, payload = await fut
        if status == "refused":
            from multa_broker.store import PinMismatch

            raise PinMismatch(str(payload))
        if status != "ok":
            raise MultaError(str(payload))
        return payload

    async def load(self, path: str, thresholds: Any, sha256: str | None = None) -> modelmod.ModelInfo:
        snap = await asyncio.to_thread(self._copy_model, path)
        try:
            for _ in range(SLOTS):
                await self._slots.acquire()
            try:
                if not self._alive():
                    await self._kill()
                    await self._start()
                # The worker hashes the bytes it loads from the private copy: no swap in between.
                info = await self._call("load", str(snap), thresholds, self._threads, sha256)
            finally:
                for _ in range(SLOTS):
                    self._slots.release()
        except MultaError as e:
            shutil.rmtree(snap, ignore_errors=True)
            # Name the user's files, not our private copy.
            from multa_broker import store

            raise type(e)(str(e).replace(str(snap), str(store.resolve(path)))) from None
        except BaseException:
            shutil.rmtree(snap, ignore_errors=True)
            raise
        old, self._snapshot = self._snapshot, snap
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._source = (str(snap), thresholds, sha256)
        self.model = info
        return info

    async def _restart(self) -> None:
        async with self._restart_lock:
            if self._alive():
                return  # another batch restarted it already
            await self._kill()
            await self._start()
            if self._source is not None:
                snap, thresholds, sha256 = self._source
                self.model = await self._call("load", snap, thresholds, self._threads, sha256)
                log.warning("model worker restarted with %s", self.model.name)

    async def classify(self, flows: Sequence[Flow]) -> list[Result]:
        async with self._slots:
            info = self.model  # a load holds every slot, so this is the worker's model
            assert info is not None
            b = encode(flows, info.n)
            try:
                probs = await self._call("probs", b.sizes, b.dirs, b.iats, b.lengths, b.proto, b.ctx, b.has_ctx)
            except WorkerDied:
                log.error("model worker died; restarting it (this batch of %d flows is lost)", len(flows))
                try:
                    await self._restart()
                except Exception as e:  # the next batch tries again
                    log.error("model worker restart failed: %s", e)
                raise
        return modelmod.results_from_probabilities(info, flows, probs)

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                await asyncio.wait_for(proc.wait(), 5)
            except (asyncio.TimeoutError, ConnectionError):
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def close(self) -> None:
        async with self._write_lock:
            await self._kill()
        if self._snapshot is not None:
            shutil.rmtree(self._snapshot, ignore_errors=True)
            self._snapshot = None


def make_runner(worker: str, threads: int, loader: modelmod.Loader | None) -> Any:
    """``process`` needs multa's own loader (the worker imports it); a custom loader runs in a thread."""
    if worker == "process" and loader is None:
        return ProcessRunner(threads)
    return ThreadRunner(loader or modelmod.load_classifier, threads)
