"""The controller's ZeroMQ side: what it does with each message it receives,
and the build requests it sends."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from roost.controller import redispair, retired
from roost.controller.astore import AsyncStore
from roost.controller.backups import CAPTURE_TIMEOUT_S, BackupError, described
from roost.controller.build_env import BuildEnvRpc
from roost.controller.copies import CopyAttempts, needed_images, note_copy, plan_copies
from roost.controller.core import Controller
from roost.controller.deploycancel import cancel_deploy
from roost.controller.deployflow import Event, Stage, build_move, failure_move, stage_of
from roost.controller.gateway_rpc import GatewayRpc
from roost.controller.hostsuspend import HostSuspend
from roost.controller.image_rpc import ImageRpc
from roost.controller.metrics import BUILDS
from roost.controller.platformsnap import PlatformFiles, PlatformSnap
from roost.controller.releasephase import ReleasePhase
from roost.controller.servicehosts import host_id as servicehost_id
from roost.controller.services import ServiceError
from roost.controller.store import AppRow, BuildRow, NotFound
from roost.images.manifest import reads_files_layers
from roost.proc import upstate
from roost.settings import Settings
from roost.wire.cluster import Endpoint
from roost.wire.dispatch import Handlers, at_once, on, pong
from roost.wire.messages import (
    BuildAccepted,
    BuildLog,
    BuildRequest,
    BuildResult,
    DrainedApps,
    Error,
    Heartbeat,
    HeartbeatReply,
    ImageCopy,
    LogBatch,
    LogLine,
    Msg,
    Ok,
    RouterLogBatch,
    RouterStats,
    RouteSnapshotRequest,
    ServiceHostStatus,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

# How long a runner may take to pull one image or bundle it was asked to hold.
COPY_TIMEOUT_S = 300.0
# Replacing lost copies: how often the lease holder checks, and at most how
# many it asks for at once (the rest wait for the next pass).
COPY_CHECK_S = 5.0
COPIES_PER_PASS = 4
# How often the lease holder looks for queued deploys whose turn came.
QUEUE_CHECK_S = 0.5
# How long past its own bounds a stage may last before a deploy queued
# behind it takes it for abandoned (its controller stopped mid-stage).
STALL_MARGIN_S = 300.0


def stall_limits(s: Settings) -> dict[Stage, float]:
    """How long a deploy may stay in each stage (deployflow.stalled): the
    bounds of the work done in it, and a margin."""
    return {
        Stage.BUILDING: s.build_timeout_s + STALL_MARGIN_S,
        Stage.PROVISIONING: 2 * STALL_MARGIN_S,  # servicehost requests: a few minutes
        Stage.COPYING: 3 * COPY_TIMEOUT_S + STALL_MARGIN_S,  # three runners asked in turn
        # A backup before the release, then the predeploy and release commands.
        Stage.RELEASE_PHASE: CAPTURE_TIMEOUT_S + s.release_timeout_s + STALL_MARGIN_S,
        Stage.RELEASING: STALL_MARGIN_S,
    }


class Lost(Exception):
    """Another writer moved the deploy before this one could."""


class Deploy:
    """One deploy as this controller moves it: each move a compare-and-set
    from the stage it last wrote; Lost when another writer moved it first."""

    def __init__(self, store: AsyncStore, build_id: str, status: str) -> None:
        self.store, self.build_id, self.status = store, build_id, status

    async def move(self, event: Event) -> None:
        move = build_move(self.status, event)
        if not await self.store.move_build(self.build_id, move):
            raise Lost(self.build_id)
        self.status = move.after

    async def release(self, app_id: int, res: BuildResult) -> int:
        """Make the release and move to rolling out, in one transaction."""
        move = build_move(self.status, Event.RELEASED)
        version = await self.store.release_build(app_id, res, move)
        if version is None:
            raise Lost(self.build_id)
        self.status = move.after
        return version

    async def fail(self, error: str, app: str = "", say: str = "") -> bool:
        """End the deploy as failed at its stage, with `say` as the build
        log's last line (of `app`), written with the stage so a build stream
        that sees the end has seen it; whether this writer did."""
        move = failure_move(self.status)
        lines = [LogLine(app=app, ts=time.time(), process=self.build_id, source="build", line=say)]
        if not await self.store.move_build(self.build_id, move, error, lines if say else ()):
            return False
        self.status = move.after
        await self.store.notify_event("deploy-failed", app, error, build=self.build_id)
        return True


class ControllerService:
    def __init__(
        self,
        controller: Controller,
        builders: RpcClient | None,
        client_for: Callable[[Endpoint], RpcClient] | None = None,
        platform: PlatformFiles | None = None,
    ) -> None:
        self.c = controller
        # Redis copies whose replication problem was raised (redispair.py).
        self.replicas = redispair.ReplicaWatch()
        self.builders = builders
        self.client_for = client_for
        self.gateway = GatewayRpc(self)
        self.images = ImageRpc(controller)
        self.platform = PlatformSnap(controller.store, platform)  # backupd's questions
        self._data_dir = platform.data_dir if platform is not None else None
        self.host_suspend = HostSuspend(controller)  # a host restore's apps in maintenance
        # The deploy's predeploy and release commands; postdeploy once it is live.
        self.release_phase = ReleasePhase(controller, client_for)
        controller.after_live = self.release_phase.after_live
        self._copy_attempts: dict[str, CopyAttempts] = {}
        self._needed: tuple[int, set[str]] | None = None  # (desired-state count, digests)
        # Every request a controller answers (the gateway's and the image
        # questions have their own modules).
        self.handle = Handlers(
            "controller",
            [
                at_once(Heartbeat, self.heartbeat),
                on(LogBatch, self.logs),
                on(BuildLog, self.build_log),
                on(BuildResult, self.build_result),
                on(ServiceHostStatus, self.servicehost_status),
                on(RouteSnapshotRequest, self.route_snapshot),
                at_once(RouterStats, self.router_stats),
                at_once(RouterLogBatch, self.router_log),
                pong(controller.name),
                *self.gateway.entries(),
                *self.images.entries(),
                *BuildEnvRpc(controller).entries(),
                *self.platform.entries(),
                *self.host_suspend.entries(),
            ],
        )

    def heartbeat(self, msg: Heartbeat) -> Msg:
        # Answered from memory, as the RPC server reads it: no heartbeat
        # waits for the database, or for a task of its own.
        c = self.c
        generation = c.soft.generation
        was_down = msg.host_id in c.soft.hosts and not c.soft.alive(msg.host_id)
        came_back = c.soft.record(msg, time.monotonic())
        c.history.heartbeat(msg, time.time())
        if came_back:
            log.info("host %s (%s) is up", msg.host_id, msg.hostname)
            c.hosts_heard.note(msg, up_again=was_down and c.is_leader)  # written by its loop
            c.wake.set()
        elif c.soft.generation != generation and c.is_leader:
            # Something a pass depends on moved (an instance came up, one
            # crashed): pass now, not at the next tick, half a second away
            # on average, which a rollout's promotion and a route's change
            # would wait. Changes arriving during a pass make one more.
            c.wake.set()
        if not c.is_leader:
            return HeartbeatReply()
        want = c.assignment_for(msg.host_id)
        # Version 0: this holder has made no assignment for the host yet (it
        # just took the lease). Sent, its higher fence would make the runner
        # stop everything it runs until the first pass.
        if want.version and (msg.fence, msg.version) != (want.fence, want.version):
            return HeartbeatReply(assignment=want)
        return HeartbeatReply()

    def router_stats(self, msg: RouterStats) -> Msg:
        # From memory, as heartbeats are: the charts' series (roost.controller.history).
        self.c.history.router(msg, time.time())
        return Ok()

    def router_log(self, msg: RouterLogBatch) -> Msg:
        # Access lines go to the apps' drains only (roost.router.accesstail);
        # the answer tells the router which apps have drains.
        self.c.logdrains.offer(msg.lines)
        return DrainedApps(apps=self.c.logdrains.apps())

    async def logs(self, msg: LogBatch) -> Msg:
        await self.c.store.append_logs(list(msg.lines))
        return Ok()

    async def build_log(self, msg: BuildLog) -> Msg:
        now = time.time()
        lines = [
            LogLine(app=msg.app, ts=now, source="build", process=msg.build_id, line=ln)
            for ln in msg.lines
        ]
        await self.c.store.append_logs(lines)
        return Ok()

    async def build_result(self, msg: BuildResult) -> Msg:
        await self.build_finished(msg)
        self.c.wake.set()
        return Ok()

    async def servicehost_status(self, msg: ServiceHostStatus) -> Msg:
        sender = servicehost_id(msg)
        reply: Msg = Ok()
        b = self.c.services
        if b is not None:
            # Servicehosts replaced for good (controller/retired.py): each
            # push is answered with them; one of them is refused.
            rows = await b.retirements.refresh(b.store, b.hosts, b.status)
            reply = retired.answer(sender, rows)
            if retired.is_retired(sender, rows):
                log.warning("servicehost %s was replaced for good: its report is refused", sender)
                return reply
            b.status[sender] = msg
        if self.c.is_leader:
            await self.c.watches.disk(
                servicehost_id(msg), msg.disk_free_bytes, msg.disk_total_bytes,
                self.c.settings.notify_disk_free,
            )  # fmt: skip
            await redispair.raise_events(self.replicas, self.c.store, servicehost_id(msg), msg)
        return reply

    async def route_snapshot(self, _msg: RouteSnapshotRequest) -> Msg:
        if not self.c.is_leader:
            return Error(message="not the scheduler lease holder", retryable=True)
        if not self.c.table_published:  # its first table waits for the hosts' heartbeats
            return Error(message="no route table yet", retryable=True)
        return self.c.route_snapshot()

    async def build_finished(self, res: BuildResult) -> None:
        """Walk the deploy from the builder's result to its rollout, each
        stage written as it starts (roost.controller.deployflow). Its first
        move is the claim: a retried delivery, here or at another controller,
        finds the build past `building` (or loses that compare-and-set) and
        changes nothing."""
        c = self.c
        try:
            build = await c.store.build(res.build_id)
        except NotFound:
            log.warning("result for unknown build %s", res.build_id)
            return
        if stage_of(build.status) is not Stage.BUILDING:
            return  # a retried delivery of a result already taken
        app = await c.store.app_by_id(build.app_id)
        deploy = Deploy(c.store, build.id, build.status)
        if not res.ok or res.spec is None:
            error = res.error or "build failed"
            if await deploy.fail(error, app.name, f"-----> build failed: {error}"):
                BUILDS.labels("failed").inc()
                await c.store.add_event("build-failed", f"{app.name}: {error}", app.id)
            return
        try:
            error = await self._deploy(app, res, deploy)
        except Lost:
            return  # another controller moved this deploy first: it carries on
        except Exception as exc:
            log.exception("build %s: the deploy failed at %s", build.id, deploy.status)
            error = f"{deploy.status} failed: {exc}"
        if error:
            await deploy.fail(error, app.name, f"-----> {error}")

    async def _deploy(self, app: AppRow, res: BuildResult, deploy: Deploy) -> str:
        """Provision, copy, run the release phase, release: an error text, or
        "" once the release exists and rolls out (core.Controller ends it)."""
        c = self.c
        assert res.spec is not None
        await deploy.move(Event.BUILT)
        BUILDS.labels("succeeded").inc()
        if res.spec.services:
            error = await self._provision(app, res)
            if error:
                return error
            await deploy.move(Event.PROVISIONED)
        else:
            await deploy.move(Event.NO_SERVICES)
        error = await self._copy(app, res)
        if error:
            return error
        await deploy.move(Event.COPIED)
        if res.spec.services:
            # Before the release phase, which may migrate the data.
            error = await self._backup_before_release(app, res)
            if error:
                return error
        ran = await self.release_phase.before_release(app, res)
        if ran:
            await c.store.add_event("deploy-failed", f"{app.name}: {ran}", app.id)
            return ran
        await deploy.move(Event.NO_RELEASE_COMMAND if ran is None else Event.RELEASE_RAN)
        version = await deploy.release(app.id, res)
        formation = await c.store.formation(app.id)
        singles = set(res.spec.singletons)  # one, even of a web type
        defaults = {
            name: (c.settings.web_instances if proc.web and name not in singles else 1)
            for name, proc in res.spec.processes.items()
            if name not in formation
        }
        if defaults:
            await c.store.set_formation(app.id, defaults)
        await c.platform_log(
            app.name, f"-----> release v{version} built; starting instances", res.build_id, "build"
        )
        return ""

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

    async def _backup_before_release(self, app: AppRow, res: BuildResult) -> str:
        """The app's data backed up (and kept) before a new release starts
        and may migrate it; an error text when a backupd is configured and
        the backup failed (the release is not made), else ""."""
        c = self.c
        if c.backups.configured:
            await c.platform_log(
                app.name, "-----> backing up before the release", res.build_id, "build"
            )
        try:
            entries = await c.backups.before_change(app.name, "pre-release")
        except BackupError as exc:
            return str(exc)
        if entries:
            taken = described(entries)
            await c.platform_log(app.name, f"-----> backed up: {taken}", res.build_id, "build")
        return ""

    async def _copy(self, app: AppRow, res: BuildResult) -> str:
        """A second host holds a verified copy of the image (and of its static
        bundle) before the release exists: losing the builder's store then
        loses no serving image. The runner keeps them in its own store and
        serves them to other runners and routers (roost.runner.copies).
        Returns an error text, or "" when a runner confirmed its copies."""
        if self.client_for is None:
            return ""  # an API-only controller (tests): nothing to ask
        # The static bundle travels with the image, to the same host: routers
        # that cannot reach a builder fetch it from there (roost.router.bundles).
        digests = [res.image_digest] + ([res.static_digest] if res.static_digest else [])
        hosts = self._copy_hosts()
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

    def _copy_hosts(self) -> list[Heartbeat]:
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
                    await client.call(ImageCopy(digest=digest), timeout=COPY_TIMEOUT_S, tries=1)
                except (RpcTimeout, RemoteError) as exc:
                    return f"{hb.host_id}: {exc}"
                await self.c.store.add_copy(digest, hb.host_id)
        finally:
            await client.close()
        return ""

    async def copy_loop(self) -> None:
        """Every COPY_CHECK_S, keep_copies (does nothing off the lease)."""
        while True:
            await asyncio.sleep(COPY_CHECK_S)
            try:
                await self.keep_copies()
            except Exception:
                log.exception("the pass replacing lost image copies failed")

    async def keep_copies(self) -> list[tuple[str, str, bool]]:
        """One pass of the lease holder replacing lost copies (see roost.controller.copies):
        a copy on another live runner of every kept image or bundle whose holders
        are all down. Returns the asks made: (digest, host, succeeded)."""
        c = self.c
        if self.client_for is None or not c.is_leader or not c.settled(time.monotonic()):
            return []  # a replica that just took the lease does not yet know who is alive
        # What retention keeps changes only with releases: read them again
        # only when desired state moved (thousands of apps: a costly read).
        version = await c.store.desired_version()
        if self._needed is None or self._needed[0] != version:
            releases, current = await c.store.release_images()
            self._needed = (version, needed_images(releases, current, c.settings.keep_releases))
        needed, holders = self._needed[1], await c.store.all_copies()
        alive = {hb.host_id: hb for hb in self._copy_hosts()}
        asks = plan_copies(
            needed, holders, alive, self._copy_attempts, time.monotonic(), limit=COPIES_PER_PASS
        )
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
        """Create the build and hand it to a builder, or queue it behind the
        app's deploy under way (deployflow); failures land in the build."""
        c = self.c
        ahead = await c.store.enqueue_build(build_id, app_id, archive)
        got = f"-----> received {len(archive)} bytes; "
        if ahead is not None:
            await c.platform_log(
                app_name, got + f"waiting for deploy {ahead} to finish", build_id, "build"
            )
            return
        await c.platform_log(app_name, got + "building", build_id, "build")
        await self._hand_over(app_name, app_id, build_id, archive)

    async def queue_loop(self) -> None:
        """Every QUEUE_CHECK_S, the lease holder starts the deploys whose turn came."""
        while True:
            await asyncio.sleep(QUEUE_CHECK_S)
            if not self.c.is_leader:
                continue
            try:
                await self.start_waiting()
            except Exception:
                log.exception("starting queued deploys failed")

    async def start_waiting(self) -> list[str]:
        """Start each app's next queued deploy whose earlier ones ended; their ids."""
        started = []
        for app_id in await self.c.store.apps_with_queued():
            build_id = await self.start_queued(app_id)
            if build_id is not None:
                started.append(build_id)
        return started

    async def start_queued(self, app_id: int) -> str | None:
        """Claim and build the app's next queued deploy if its turn came."""
        claimed = await self.c.store.claim_queued(app_id, stall_limits(self.c.settings))
        if claimed is None:
            return None  # still waiting, or another controller took it
        build_id, archive = claimed
        app = await self.c.store.app_by_id(app_id)
        await self.c.platform_log(
            app.name, "-----> the earlier deploy ended; building", build_id, "build"
        )
        await self._hand_over(app.name, app_id, build_id, archive)
        return build_id

    async def cancel(self, build_id: str, who: str) -> BuildRow:
        """Cancel a deploy (roost.controller.deploycancel) and start the app's
        next queued one at once; deploycancel.Ended when it had ended."""
        build = await cancel_deploy(self.c, build_id, who)
        await self.start_queued(build.app_id)
        return build

    async def _down_here(self) -> str:
        """What `roost up` on this controller's machine says is down, and why,
        for a deploy's failure: a role crash-looping there is the likely
        cause, and `git push` has no other way to learn it. "" in a cluster
        without `roost up` (its hosts' units say it), or when all are up."""
        if self._data_dir is None:
            return ""
        down = await asyncio.to_thread(upstate.down_here, self._data_dir)
        return f"; {upstate.DOWN_HERE}: {'; '.join(down)}" if down else ""

    async def _hand_over(self, app_name: str, app_id: int, build_id: str, archive: bytes) -> None:
        """Hand a `building` deploy to a builder; failures land in the build."""
        c = self.c
        await c.store.notify_event("deploy-started", app_name, f"deploy {build_id}", build=build_id)
        deploy = Deploy(c.store, build_id, Stage.BUILDING)
        if self.builders is None:
            await deploy.fail("no builder configured")
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
                    # Until every runner heard of (down ones too: they come
                    # back) reads layers named by their files: a rolling
                    # upgrade replaces builders before runners.
                    layer_files=all(
                        reads_files_layers(seen.heartbeat.release) for seen in c.soft.hosts.values()
                    ),
                ),
                timeout=30,
            )
        except Exception as exc:
            why = f"no builder accepted the build: {exc}" + await self._down_here()
            await deploy.fail(why, app_name, f"-----> {why}")
            return
        if not isinstance(reply, BuildAccepted):
            await deploy.fail(f"builder answered {reply!r}")
