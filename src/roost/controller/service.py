"""The controller's ZeroMQ side: what it does with each message it receives,
and the build requests it sends."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from roost.controller.core import Controller
from roost.controller.gateway_rpc import GATEWAY_MESSAGES, GatewayRpc
from roost.controller.image_rpc import IMAGE_MESSAGES, ImageRpc
from roost.controller.metrics import BUILDS
from roost.controller.replicas import CopyAttempts, needed_images, note_copy, plan_copies
from roost.controller.services import ServiceError
from roost.controller.store import AppRow, NotFound
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    BuildAccepted,
    BuildLog,
    BuildRequest,
    BuildResult,
    Error,
    Heartbeat,
    HeartbeatReply,
    ImageReplicate,
    LogBatch,
    LogLine,
    Msg,
    Ok,
    Ping,
    RouteSnapshotRequest,
    ServiceHostStatus,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

# How long a runner may take to pull one image or bundle it was asked to hold.
REPLICATE_TIMEOUT_S = 300.0
# Re-replication: how often the lease holder checks, and at most how many
# copies it asks for at once (the rest wait for the next pass).
REPLICA_CHECK_S = 5.0
COPIES_PER_PASS = 4


class ControllerService:
    def __init__(
        self,
        controller: Controller,
        builders: RpcClient | None,
        client_for: Callable[[Endpoint], RpcClient] | None = None,
    ) -> None:
        self.c = controller
        self.builders = builders
        self.client_for = client_for
        self._finishing: set[str] = set()
        self.gateway = GatewayRpc(self)
        self.images = ImageRpc(controller)
        self._copy_attempts: dict[str, CopyAttempts] = {}

    async def handle(self, msg: Msg) -> Msg:
        c = self.c
        if isinstance(msg, Heartbeat):
            # Answered from memory: no heartbeat waits for the database.
            came_back = c.soft.record(msg, time.monotonic())
            if came_back:
                log.info("host %s (%s) is up", msg.host_id, msg.hostname)
                c.note_host(msg)  # written to the hosts table by Controller.hosts_loop
                c.wake.set()
            if not c.is_leader:
                return HeartbeatReply()
            want = c.assignment_for(msg.host_id)
            if (msg.fence, msg.version) != (want.fence, want.version):
                return HeartbeatReply(assignment=want)
            return HeartbeatReply()
        if isinstance(msg, LogBatch):
            await c.store.append_logs(list(msg.lines))
            return Ok()
        if isinstance(msg, BuildLog):
            now = time.time()
            lines = [
                LogLine(app=msg.app, ts=now, source="build", process=msg.build_id, line=ln)
                for ln in msg.lines
            ]
            await c.store.append_logs(lines)
            return Ok()
        if isinstance(msg, BuildResult):
            await self.build_finished(msg)
            c.wake.set()
            return Ok()
        if isinstance(msg, ServiceHostStatus):
            if c.services is not None:
                c.services.status[msg.host or "servicehost"] = msg
            return Ok()
        if isinstance(msg, RouteSnapshotRequest):
            if not c.is_leader:
                return Error(message="not the scheduler lease holder", retryable=True)
            return c.route_snapshot()
        if isinstance(msg, Ping):
            return Ok(detail=c.name)
        if isinstance(msg, GATEWAY_MESSAGES):
            return await self.gateway.handle(msg)
        if isinstance(msg, IMAGE_MESSAGES):
            return await self.images.handle(msg)
        return Error(message=f"controller does not handle {type(msg).__name__}")

    async def build_finished(self, res: BuildResult) -> None:
        # A result the builder re-sends while the first delivery is still
        # provisioning services must not make a second release.
        if res.build_id in self._finishing:
            return
        self._finishing.add(res.build_id)
        try:
            await self._build_finished(res)
        finally:
            self._finishing.discard(res.build_id)

    async def _build_finished(self, res: BuildResult) -> None:
        c = self.c
        try:
            build = await c.store.build(res.build_id)
        except NotFound:
            log.warning("result for unknown build %s", res.build_id)
            return
        if build.status != "building":
            return  # a retried delivery of a result already applied
        app = await c.store.app_by_id(build.app_id)
        BUILDS.labels("succeeded" if res.ok and res.spec is not None else "failed").inc()
        if not res.ok or res.spec is None:
            await c.store.finish_build(res.build_id, "failed", error=res.error or "build failed")
            await c.platform_log(
                app.name, f"-----> build failed: {res.error}", res.build_id, "build"
            )
            await c.store.add_event("build-failed", f"{app.name}: {res.error}", app.id)
            return
        if res.spec.services:
            error = await self._provision(app, res)
            if error:
                await c.store.finish_build(res.build_id, "failed", error=error)
                await c.platform_log(app.name, f"-----> {error}", res.build_id, "build")
                return
        error = await self._replicate(app, res)
        if error:
            await c.store.finish_build(res.build_id, "failed", error=error)
            await c.platform_log(app.name, f"-----> {error}", res.build_id, "build")
            return
        version = await c.store.create_release(
            app.id,
            res.build_id,
            res.image_digest,
            res.static_digest,
            res.spec,
            res.lock,
            f"build {res.build_id}",
            static_routes=list(res.static_routes),
        )
        formation = await c.store.formation(app.id)
        defaults = {
            name: (c.settings.web_instances if proc.web else 1)
            for name, proc in res.spec.processes.items()
            if name not in formation
        }
        if defaults:
            await c.store.set_formation(app.id, defaults)
        await c.store.finish_build(res.build_id, "deploying", release=version)
        await c.platform_log(
            app.name, f"-----> release v{version} built; starting instances", res.build_id, "build"
        )

    async def _provision(self, app: AppRow, res: BuildResult) -> str:
        """Provision the services the new release asks for; an error text or ""."""
        assert res.spec is not None
        if self.c.services is None:
            return "this platform has no servicehost; the app asks for " + ", ".join(
                res.spec.services
            )
        try:
            added = await self.c.services.ensure(app, res.spec)
        except ServiceError as exc:
            return str(exc)
        for kind in added:
            await self.c.platform_log(app.name, f"-----> provisioned {kind}", res.build_id, "build")
        return ""

    async def _replicate(self, app: AppRow, res: BuildResult) -> str:
        """A second host holds a verified copy of the image (and of its static
        bundle) before the release exists: losing the builder's store then
        loses no serving image. The runner keeps them in its own store and
        serves them to other runners and routers (roost.runner.replicas).
        Returns an error text, or "" when a runner confirmed its copies."""
        if self.client_for is None:
            return ""  # an API-only controller (tests): nothing to ask
        # The static bundle travels with the image, to the same host: routers
        # that cannot reach a builder fetch it from there (roost.router.bundles).
        digests = [res.image_digest] + ([res.static_digest] if res.static_digest else [])
        hosts = self._replica_hosts()
        random.shuffle(hosts)
        last = "no runner host is up"
        for hb in hosts[:3]:
            why = await self._ask_copy(hb, digests)
            if why:
                last = why
                continue
            await self.c.platform_log(
                app.name, f"-----> image copied to host {hb.hostname}", res.build_id, "build"
            )
            return ""
        return f"could not put a second copy of the image on another host ({last})"

    def _replica_hosts(self) -> list[Heartbeat]:
        """Live runners that serve RPC (so can hold and serve a copy)."""
        return [
            s.heartbeat
            for s in self.c.soft.alive_hosts()
            if s.heartbeat.rpc_endpoint and s.heartbeat.rpc_key
        ]

    async def _ask_copy(self, hb: Heartbeat, digests: list[str]) -> str:
        """Ask runner `hb` to hold `digests`, recording each copy it confirms
        (before any release relies on it: runners and routers that cannot
        reach a builder find it through ImageSourcesRequest). "" or why not."""
        assert self.client_for is not None
        client = self.client_for(Endpoint(hb.rpc_endpoint, hb.rpc_key))
        try:
            for digest in digests:
                try:
                    await client.call(
                        ImageReplicate(digest=digest), timeout=REPLICATE_TIMEOUT_S, tries=1
                    )
                except (RpcTimeout, RemoteError) as exc:
                    return f"{hb.host_id}: {exc}"
                await self.c.store.add_replica(digest, hb.host_id)
        finally:
            await client.close()
        return ""

    async def replica_loop(self) -> None:
        """Every REPLICA_CHECK_S, keep_replicas (does nothing off the lease)."""
        while True:
            await asyncio.sleep(REPLICA_CHECK_S)
            try:
                await self.keep_replicas()
            except Exception:
                log.exception("re-replication pass failed")

    async def keep_replicas(self) -> list[tuple[str, str, bool]]:
        """One re-replication pass of the lease holder (see roost.controller.replicas):
        a copy on another live runner of every kept image or bundle whose holders
        are all down. Returns the asks made: (digest, host, succeeded)."""
        c = self.c
        if self.client_for is None or not c.is_leader or not c.settled(time.monotonic()):
            return []  # a replica that just took the lease does not yet know who is alive
        releases, current = await c.store.release_images()
        needed, holders = needed_images(releases, current), await c.store.all_replicas()
        alive = {hb.host_id: hb for hb in self._replica_hosts()}
        asks = plan_copies(needed, holders, alive, self._copy_attempts, time.monotonic())
        asks = asks[:COPIES_PER_PASS]
        if not asks:
            return []
        async with asyncio.TaskGroup() as tg:
            tasks = [
                (digest, host, tg.create_task(self._ask_copy(alive[host], [digest])))
                for digest, host in asks
            ]
        done: list[tuple[str, str, bool]] = []
        for digest, host, task in tasks:
            why = task.result()
            self._copy_attempts = note_copy(
                self._copy_attempts, digest, host, not why, time.monotonic()
            )
            if why:
                log.warning("no new copy of %s (no live host held one): %s", digest, why)
                event = ("image-copy-failed", f"{digest[:19]}: no live host holds it; "
                         f"copying to {host} failed: {why}")  # fmt: skip
            else:
                log.info("copied %s to host %s: no live host held it", digest, host)
                event = ("image-copied", f"{digest[:19]}: copied to {host} (no live holder)")
            await c.store.add_event(*event)
            done.append((digest, host, not why))
        return done

    async def _serving_lock(self, app_id: int) -> str:
        """The serving release's lock: a build with unchanged requirements reuses it."""
        app = await self.c.store.app_by_id(app_id)
        if app.current_release is None:
            return ""
        return (await self.c.store.release(app_id, app.current_release)).lock

    async def start_build(self, app_name: str, app_id: int, build_id: str, archive: bytes) -> None:
        """Create the build and hand it to a builder; failures land in the build."""
        c = self.c
        await c.store.create_build(build_id, app_id)
        await c.platform_log(
            app_name, f"-----> received {len(archive)} bytes; building", build_id, "build"
        )
        if self.builders is None:
            await c.store.finish_build(build_id, "failed", "no builder configured")
            return
        previous = await self._serving_lock(app_id)
        try:
            reply = await self.builders.call(
                BuildRequest(
                    build_id=build_id,
                    app=app_name,
                    archive=archive,
                    previous_lock_text=previous,
                    app_id=app_id,
                ),
                timeout=30,
            )
        except Exception as exc:
            await c.store.finish_build(build_id, "failed", f"no builder accepted the build: {exc}")
            await c.platform_log(
                app_name, f"-----> no builder accepted the build: {exc}", build_id, "build"
            )
            return
        if not isinstance(reply, BuildAccepted):
            await c.store.finish_build(build_id, "failed", f"builder answered {reply!r}")
