"""Accepting builds, running them (same app serialized, apps in parallel),
streaming their logs and delivering their results.

Theory of operation: `submit` is called from the RPC handler and returns at
once; the build runs in a task of the manager's TaskGroup, so every build has
an owner and daemon shutdown cancels them all (which kills their processes
and removes their files). A per-app lock serializes builds of one app. Log
lines go into a per-build buffer that a pump task sends as BuildLog batches
every ~100 ms (the last as soon as the build ends); the BuildResult follows
the last batch. Sending goes through the injected `send` (the controller
RpcClient in the daemon, a list in tests); a log batch that cannot be
delivered is dropped, the result is retried.
Duplicate submissions of one build id (an RPC retry) are accepted once.
After each build, and every storegc.COLLECT_EVERY_S, the image store is
collected (`collect_store`, builder/storegc.py) while no build runs: a build
about to start waits for a collection under way to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from roost import aio
from roost.appspec import AppSpec
from roost.builder import bytecode, metrics
from roost.builder.errors import BuildError
from roost.builder.layers import prune_layers
from roost.builder.pipeline import Build
from roost.builder.storegc import COLLECT_EVERY_S, StoreCollector
from roost.builder.workspace import Workspace
from roost.proc.backoff import Backoff, Retry
from roost.wire.messages import BuildEnv, BuildEnvRequest, BuildLog, BuildRequest, BuildResult, Msg

log = logging.getLogger("roost.builder")

Send = Callable[[Msg], Awaitable[None]]
# A request to a controller and its answer (BuildEnvRequest).
Ask = Callable[[Msg], Awaitable[Msg]]
LOG_BATCH_S = 0.1
RESULT_TRIES = 6


async def pump_logs(
    lines: list[str],
    wake: asyncio.Event,
    done: asyncio.Event,
    send: Callable[[list[str]], Awaitable[None]],
    batch_s: float = LOG_BATCH_S,
) -> None:
    """Send a build's `lines` in batches (`wake`: lines came) until it is
    `done` and every line went. A batch gathers lines for `batch_s`, but the
    last goes as soon as the build ends: its result, and the deploy, wait for
    it (gathering there cost every deploy ~0.1 s)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(wake.wait(), timeout=1.0)
        wake.clear()
        if not done.is_set():
            with contextlib.suppress(TimeoutError):  # gather a batch
                await aio.wait_for(done.wait(), timeout=batch_s)
        if lines:
            batch = lines[:]
            del lines[:]
            await send(batch)
        if done.is_set() and not lines:
            return


class BuildManager:
    def __init__(
        self,
        ws: Workspace,
        send: Send,
        result_backoff_s: float = 1.0,
        ask: Ask | None = None,
        collector: StoreCollector | None = None,
    ) -> None:
        self.ws = ws
        self._send = send
        # None (tests, a builder without controllers): builds see no config
        # vars or services, and bundle_config only its 'core' section.
        self._ask = ask
        self._backoff = result_backoff_s
        self._app_locks: dict[str, asyncio.Lock] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._queue: asyncio.Queue[BuildRequest] = asyncio.Queue()
        self.running: set[str] = set()
        # The image store's collection (None: never collected).
        self._collector = collector
        self._collecting = False
        self._store_idle = asyncio.Event()
        self._store_idle.set()
        self._builds_started = 0

    def submit(self, req: BuildRequest) -> bool:
        """Queue a build; False when this build id was already accepted."""
        if req.build_id in self._seen:
            return False
        self._seen[req.build_id] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        self._queue.put_nowait(req)
        return True

    async def run(self) -> None:
        """Run builds until cancelled; cancelling stops every build cleanly."""
        async with asyncio.TaskGroup() as tg:
            if self._collector is not None:
                tg.create_task(self._collect_loop(), name="collect-store")
            while True:
                req = await self._queue.get()
                tg.create_task(self._build(req), name=f"build-{req.build_id}")

    async def _build(self, req: BuildRequest) -> None:
        lines: list[str] = []
        wake = asyncio.Event()
        done = asyncio.Event()

        def sink(line: str) -> None:
            lines.append(line)
            wake.set()

        async def send(batch: list[str]) -> None:
            try:
                await self._send(BuildLog(build_id=req.build_id, app=req.app, lines=batch))
            except Exception as exc:
                log.warning("build %s: log batch not delivered: %s", req.build_id, exc)

        start = time.monotonic()
        lock = self._app_locks.setdefault(req.app, asyncio.Lock())
        async with asyncio.TaskGroup() as tg:
            pumper = tg.create_task(pump_logs(lines, wake, done, send))
            try:
                if lock.locked():
                    sink(f"-----> waiting for the previous build of {req.app} to finish")
                async with lock:
                    while self._collecting:  # never beside a deleting collection
                        await self._store_idle.wait()
                    self.running.add(req.build_id)  # (no await since the test)
                    self._builds_started += 1
                    try:
                        result, build = await self._run_one(req, sink, start)
                    finally:
                        self.running.discard(req.build_id)
            finally:
                done.set()
                wake.set()
            await pumper
        metrics.record(result)
        try:
            await self._deliver(result)
        finally:
            # A fresh layer's blob is named before it is stored (builder/layerpack.py):
            # the result went first, so its copy can be asked for meanwhile.
            if build is not None and (error := await build.stored()):
                log.warning("build %s: dependency layer not stored: %s", req.build_id, error)
        with contextlib.suppress(OSError):
            removed = await asyncio.to_thread(
                prune_layers, self.ws, self.ws.settings.builder_layers_kept
            )
            if removed:
                log.info("pruned %d unused dependency layers", len(removed))
            # Bytecode no kept layer holds any more (roost.builder.bytecode).
            await asyncio.to_thread(bytecode.prune, bytecode.store_dir(self.ws.uv_cache))
        await self.trim_uv_cache()
        await self.collect_store()

    async def collect_store(self) -> list[str]:
        """Collect the image store (builder/storegc.py) unless a build runs;
        the digests deleted. A build starting while the controller is asked
        cancels this round; builds wait while blobs are deleted."""
        if self._collector is None or self.running or self._collecting:
            return []
        started = self._builds_started
        try:
            keep = await self._collector.retained()
        except OSError as exc:
            log.warning("reading the image store failed: %s", exc)
            return []
        if keep is None or self.running or self._collecting or self._builds_started != started:
            return []
        self._collecting = True
        self._store_idle.clear()
        try:
            return await self._collector.collect(keep, time.time())
        except OSError as exc:  # a build's failure is its own; this one is logged
            log.warning("collecting the image store failed: %s", exc)
            return []
        finally:
            self._collecting = False
            self._store_idle.set()

    async def _collect_loop(self) -> None:
        while True:
            await asyncio.sleep(COLLECT_EVERY_S)
            await self.collect_store()

    async def trim_uv_cache(self) -> None:
        """Move uv's cache back to disk once it outgrew its memory budget and no build runs."""
        caches = self.ws.uv_caches
        if self.running or not caches.in_memory:
            return
        # Asked again after the walk: a build may have started meanwhile.
        if await asyncio.to_thread(caches.over_budget) and not self.running:
            ram = caches.detach()
            if ram is not None:
                await asyncio.to_thread(caches.retire, ram)

    async def _run_one(
        self, req: BuildRequest, sink: Callable[[str], None], start: float
    ) -> tuple[BuildResult, Build | None]:
        """The build's result, and the build when it succeeded (its layer may be storing)."""

        def failed(error: str) -> BuildResult:
            sink(f" !     {error}")
            sink(" !     build failed; the current release keeps serving")
            return BuildResult(
                build_id=req.build_id,
                app=req.app,
                ok=False,
                error=error,
                duration_s=time.monotonic() - start,
            )

        try:
            build = Build(
                self.ws, req.build_id, req.app, req.archive, sink,
                previous_lock_text=req.previous_lock_text, app_id=req.app_id,
                env_source=self._env_source(req.build_id), layer_files=req.layer_files,
            )  # fmt: skip
            out = await build.run(settle=False)
        except BuildError as exc:
            return failed(str(exc)), None
        except Exception as exc:  # a builder bug: the user still gets an answer
            log.exception("build %s crashed", req.build_id)
            return failed(f"internal builder error: {type(exc).__name__}: {exc}"), None
        return BuildResult(
            build_id=req.build_id,
            app=req.app,
            ok=True,
            image_digest=out.image_digest,
            image_size=out.image_size,
            static_digest=out.static_digest,
            lock=out.lock,
            spec=out.spec,
            duration_s=time.monotonic() - start,
            lock_digest=out.lock_digest,
            static_routes=out.static_routes,
        ), build

    def _env_source(self, build_id: str) -> Callable[[AppSpec], Awaitable[dict[str, str]]] | None:
        """How build `build_id` gets its config vars and service credentials."""
        ask = self._ask
        if ask is None:
            return None

        async def fetch(spec: AppSpec) -> dict[str, str]:
            try:
                reply = await ask(BuildEnvRequest(build_id=build_id, spec=spec))
            except Exception as exc:
                raise BuildError(f"could not get the app's configuration: {exc}") from None
            if not isinstance(reply, BuildEnv) or reply.build_id != build_id:
                raise BuildError(
                    f"controller answered {type(reply).__name__} for the configuration"
                )
            return dict(reply.env)

        return fetch

    async def _deliver(self, result: BuildResult) -> None:
        retry = Retry(Backoff(base_s=self._backoff, max_s=30.0))
        for attempt in range(1, RESULT_TRIES + 1):
            try:
                await self._send(result)
                return
            except Exception as exc:
                log.warning(
                    "build %s: result not delivered (try %d/%d): %s",
                    result.build_id, attempt, RESULT_TRIES, exc,
                )  # fmt: skip
                if attempt < RESULT_TRIES:
                    await asyncio.sleep(retry.failed())
        log.error("build %s: giving up delivering its result", result.build_id)
