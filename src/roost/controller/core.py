"""The controller process's shared state and its reconcile loop.

Theory of operation: every replica records heartbeats (soft state), marks
silent hosts down, stores logs and build results, and answers queries. The
replica holding the `scheduler` lease additionally, every tick: reads what
changed in desired state (`desired.Reader`, on the store's executor), asks
its model which apps something happened to (`model.Model.dirty`), and for
those alone, in steps (`reconcilestep.step`), places instances on live
hosts (pure `scheduler.place`), decides rollouts (pure `rollout.decide`),
turns placements into one declarative Assignment per host (sent in
heartbeat replies, stamped with the lease's fencing token;
`assign.AssignmentBook`), and publishes route-table deltas
(`routes.RouteCache`, `routes.diff_apps`). So a pass costs what changed,
and runs only when something it depends on may have changed: the loop was
woken (this replica's API, a build result, a host coming back, a heartbeat
that moved soft state, `SoftState.generation`: an instance up or crashed is
acted on at once, not at the next tick), or REFRESH_S passed since desired state was
last read (changes made through another replica's API: one counter read
when there were none). An idle cluster costs nearly nothing.

Placement starts only once this replica knows which hosts are alive: one
grace period after taking the lease, or at once when it has been hearing
heartbeats without a break for a grace period already (a follower that takes
over), so hosts alive but not yet heard from are never mistaken for dead.
Routes wait likewise, until the hosts the instances are on have been heard
from (`routes.hosts_heard`): a new holder's soft state is empty, and its
first table, which routers take whole, would route to nothing.

The lease is believed only until `lease_ttl_s` (less a margin) after the
request that granted it was sent: a holder whose database calls hang stops
acting as holder before the database's clock lets another take over. On a
new fencing token the first route publication is a full snapshot, so routers
switch to the new holder's table without asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable

from prometheus_client import Histogram

from roost import aio
from roost.appspec.service_env import service_environment, with_service_addresses
from roost.controller import (
    desired,
    drain,
    model,
    nudge,
    reconcilestep,
    rollout,
    rolloutend,
    routes,
    singleton,
)
from roost.controller.assign import AssignmentBook, HostAssignment
from roost.controller.astore import AsyncStore
from roost.controller.autorollback import AutoRollback
from roost.controller.backups import Backups
from roost.controller.history import History
from roost.controller.hostdrain import HostDrains
from roost.controller.hostsheard import HostsHeard
from roost.controller.logdrain_queue import DrainQueue
from roost.controller.logdrains import LogDrains, tls_context
from roost.controller.model import Model
from roost.controller.notifywatch import Watches
from roost.controller.scheduler import HostInfo
from roost.controller.services import ServiceBroker
from roost.controller.softstate import SoftState
from roost.controller.store import AppRow, ReleaseRow
from roost.settings import Settings
from roost.state import leases
from roost.wire.cluster import Endpoint
from roost.wire.messages import AppRoute, Assignment, LogLine, ProxyTarget, RouteSnapshot
from roost.wire.pubsub import Publisher
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.controller")

LEASE = "scheduler"
TICK_S = 0.5  # how often silent hosts are checked (and a pass may run)
# Longest a change made through another replica's API waits for the holder to
# read it (changes through this replica's API wake the loop at once).
REFRESH_S = 1.0
# Believe a granted lease for this fraction of its lifetime (clock-rate margin).
LEASE_TRUST = 0.8
# Apps per step of a pass (heartbeats are answered between steps): a few
# tens of milliseconds of work.
STEP_APPS = 500

RECONCILE_SECONDS = Histogram(
    "roost_reconcile_seconds",
    "Duration of one reconcile pass of the scheduler lease holder "
    "(pass=full: placed, assigned and routed; pass=idle: a re-read that found nothing new)",
    ["pass"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

__all__ = ["LEASE", "Controller", "HostAssignment"]


class Controller:
    def __init__(self, store: AsyncStore, settings: Settings, name: str) -> None:
        # The state database's async face: the controller's only way to it.
        self.store = store
        self.settings = settings
        self.name = name
        self.holder_id = f"{name}:{os.getpid()}:{secrets.token_hex(4)}"
        self.soft = SoftState(settings.host_grace_s)
        # Lines this replica writes also go to the apps' drains (logdrains.py).
        self.logdrains = LogDrains(
            store,
            self.holder_id,
            tls_context(settings.log_drain_ca),
            make_queue=lambda: DrainQueue(max_lines=settings.log_drain_queue),
            allow_private=settings.log_drain_private == "on",
        )
        store.log_tap = self.logdrains.offer
        # The dashboard's charts: heartbeats' and routers' figures over time.
        self.history = History()
        self.fence = 0  # lease token while we hold it, else 0
        self.lease_valid_until = 0.0  # monotonic; see the module docstring
        self.leader_since: float | None = None
        self.book = AssignmentBook()
        self.assignments: dict[str, HostAssignment] = self.book.hosts
        self.nudger = nudge.Nudger()  # runners told at once of a new assignment
        self.routes: dict[str, AppRoute] = {}
        self.route_version = 0
        self.publisher: Publisher | None = None
        self.wake = asyncio.Event()
        # Rung when this replica ends a rollout: a deploy's followers answer then.
        self.deploy_ended = aio.Bell()
        self._route_cache = routes.RouteCache()
        self._reader = desired.Reader()
        self._model = Model(settings.instance_memory_mb)
        self._snapshot_due = False  # publish a full table first under a new fence
        self._routes_held = False  # a pass withheld its routes (routes.hosts_heard)
        self._release_cache = desired.ReleaseCache()
        self._pending_since: dict[desired.ReleaseKey, float] = {}
        # A pending release's instances: when each was first seen up (rollout.note_up).
        self._up_seen: dict[desired.ReleaseKey, dict[str, tuple[int, float]]] = {}
        # Per app, the wants its last placement left short for want of room,
        # and why (scheduler.no_room): their rollouts fail with that reason.
        self._no_room: dict[str, dict[tuple[str, int, str], str]] = {}
        # Singleton instances dropped, not yet confirmed gone by their hosts.
        self._departures = singleton.Departures()
        self._acked = singleton.acked_by(self.soft)
        # Routed web instances being dropped: kept assigned a while (drain.py).
        self._drains = drain.DrainBook()
        self._hostdrains = HostDrains()  # drained hosts, emptied make-before-break
        # Rolls back a release that crash-loops soon after it went live.
        self.autorollback = AutoRollback(store, settings.rollback_window_s)
        self.watches = Watches(store)  # alerts of crash loops, OOM kills, full disks
        # When desired state was last read, what the last pass saw of soft
        # state, and the hosts it knew alive.
        self._read_at = 0.0
        self._seen: tuple[int, bool] = (-1, False)
        self._live: frozenset[str] = frozenset()
        # Whether a pass looked at every app since this holder settled: until
        # then it did not place, and hosts it never heard of changed nothing.
        self._settled_pass = False
        self._host_info: dict[str, HostInfo] = {}  # kept across passes: 1,000s of hosts
        # Hosts heard coming up, written to the hosts table every TICK_S
        # (its loop): a heartbeat never waits for a database write.
        self.hosts_heard = HostsHeard(store)
        # Set by the daemon: provisions and holds service credentials.
        self.services: ServiceBroker | None = None
        # Set by the daemon: an RPC client for one runner (told of deleted apps).
        self.client_for: Callable[[Endpoint], RpcClient] | None = None
        # Set by the daemon: a client per backupd (captures before changes, `roost backups`).
        self.backups = Backups()
        # Set by the service: told once a deploy's release went live (its postdeploy).
        self.after_live: Callable[[str, ReleaseRow], None] | None = None

    # ------------------------------------------------------------ helpers

    @property
    def is_leader(self) -> bool:
        return self.fence > 0 and time.monotonic() < self.lease_valid_until

    def settled(self, now: float) -> bool:
        """True once this holder knows which hosts are alive (see the docstring)."""
        if self.leader_since is None:
            return False
        grace = self.settings.host_grace_s
        return now - self.leader_since >= grace or self.soft.informed(now)

    async def release_row(self, app_id: int, version: int) -> ReleaseRow:
        key = (app_id, version)
        row = self._release_cache.get(key)
        if row is None:  # rows never change but for their status, unused here
            row = await self.store.release(app_id, version)
            self._release_cache.add(row)
        return row

    async def platform_log(
        self, app: str, line: str, process: str = "", source: str = "platform"
    ) -> None:
        await self.store.append_logs(
            [LogLine(app=app, ts=time.time(), source=source, process=process, line=line)]
        )

    def assignment_for(self, host_id: str) -> Assignment:
        ha = self.assignments.get(host_id)
        content = ha.content if ha else ()
        version = ha.version if ha else 0
        return Assignment(
            host_id=host_id, fence=self.fence, version=version, instances=list(content)
        )

    def instance_env(self, app_id: int, config: dict[str, str]) -> dict[str, str]:
        """What an instance's environment gets from the platform: its service
        credentials, then the release's config vars (which may override them),
        then the addresses of its services, which no config var overrides.
        An app on a servicehost pair connects through its runner's data proxy
        (controller.pairproxy). The app's credentials must be loaded
        (`ServiceBroker.warm`) first."""
        creds = self.services.app_credentials(app_id) if self.services is not None else []
        env = service_environment(creds)
        env.update(config)
        return with_service_addresses(env, creds)

    def data_proxy(self, app_id: int) -> tuple[ProxyTarget, ...]:
        """The data proxy listeners a runner serves for the app's processes
        (none for an app on no servicehost pair); loaded with its credentials."""
        return tuple(self.services.proxy_targets(app_id)) if self.services is not None else ()

    async def restart_process(self, app: AppRow, process_type: str) -> None:
        """Replace the serving release's instances of one process type."""
        await self.store.drop_placements(app.id, process_type)
        await self.store.add_event("restart", f"{app.name}: restart {process_type}", app.id)
        self.wake.set()

    def route_snapshot(self) -> RouteSnapshot:
        return RouteSnapshot(
            version=self.route_version, routes=list(self.routes.values()), fence=self.fence
        )

    # ------------------------------------------------------------ loops

    async def lease_loop(self) -> None:
        ttl = self.settings.lease_ttl_s
        while True:
            asked = time.monotonic()
            try:
                lease = await self.store.acquire_lease(LEASE, self.holder_id, ttl)
            except Exception:
                # Unknown outcome: keep the token, but believe it only until
                # the last grant runs out (`is_leader` checks the time).
                log.exception("lease renewal failed")
            else:
                self._lease_result(lease, asked, ttl)
            await asyncio.sleep(ttl / 3)

    def _lease_result(self, lease: leases.Lease | None, asked: float, ttl: float) -> None:
        if lease is None:
            if self.fence:
                log.warning("lost the scheduler lease")
            self.fence, self.leader_since, self.lease_valid_until = 0, None, 0.0
            return
        if lease.token != self.fence:
            log.info("holding the scheduler lease (fencing token %d)", lease.token)
            self.fence, self.leader_since = lease.token, time.monotonic()
            # Versions restart under the new fence; routers get a full table;
            # the first pass reads and looks at everything.
            self.book.clear()
            self._drains.clear_assigned()
            self._forget_desired()
            self._snapshot_due = True
            self.wake.set()
        self.lease_valid_until = asked + ttl * LEASE_TRUST

    async def reconcile_loop(self) -> None:
        while True:
            woken = False
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation (the daemon stopping) that arrives as `wake` is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self.wake.wait()
                    woken = True
            self.wake.clear()
            now = time.monotonic()
            # Every replica answers "which hosts are up": each marks silent
            # hosts down itself (the leader also reacts, in reconcile_once).
            await self.note_down_hosts(now)
            if not self.is_leader:
                self.soft.take_changes()  # only a lease holder's passes want them
                continue
            refresh = woken or not self._model.loaded or now - self._read_at >= REFRESH_S
            if not refresh and self._seen == (self.soft.generation, self.settled(now)):
                continue  # nothing it depends on changed since the last pass
            started = time.perf_counter()
            full = True
            try:
                full = await self.reconcile_once(refresh=refresh)
            except Exception:
                self._forget_desired()  # start the next pass from the database
                log.exception("reconcile failed")
            RECONCILE_SECONDS.labels("full" if full else "idle").observe(
                time.perf_counter() - started
            )

    async def housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                await self.store.trim_logs(self.settings.log_lines_kept)
            except Exception:
                log.exception("log trimming failed")

    async def give_up_lease(self) -> None:
        if self.is_leader:
            await self.store.release_lease(LEASE, self.holder_id)
            self.fence = 0

    # ------------------------------------------------------------ reconcile

    async def note_down_hosts(self, now: float) -> None:
        down = self.soft.mark_down(now)
        self.nudger.forget(down)
        for host_id in down:
            log.warning("host %s is down (silent for %.1fs)", host_id, self.settings.host_grace_s)
            if self.is_leader:  # one event per incident, not one per replica
                await self.store.add_event("host-down", f"host {host_id} is down")
                await self.watches.host_down(host_id)
                # Each affected app hears it in its own log stream too (one write).
                m = self._model
                if m.loaded:
                    apps = m.apps_on(host_id)
                else:
                    apps = {p.app for p in await self.store.placements() if p.host_id == host_id}
                line = f"host {host_id} is down: its instances are being placed elsewhere"
                await self.store.append_logs(
                    [LogLine(app=a, ts=time.time(), source="platform", process="", line=line)
                     for a in sorted(apps)]
                )  # fmt: skip

    def _forget_desired(self) -> None:
        """Read and look at everything on the next pass."""
        self._reader = desired.Reader()
        self._model.reset()
        self._live = frozenset()
        self._settled_pass = False

    async def reconcile_once(self, refresh: bool = True) -> bool:
        """One pass over the apps something happened to (`model.Model.dirty`);
        `refresh=False` when only soft state moved (desired state is not read).
        False when a read found nothing new and nothing else moved."""
        now = time.monotonic()
        await self.note_down_hosts(now)
        m = self._model
        seen = (self.soft.generation, self.settled(now))
        changed: set[str] = set()
        full = not m.loaded
        if refresh or not m.loaded:
            self._read_at = now
            d = await self.store.read_desired(self._reader, self._release_cache)
            waits = self._drains.due(now) or self._hostdrains.waiting
            if d is None and seen == self._seen and not m.pending and not waits:
                return False  # the periodic re-read found nothing new
            if d is not None:
                drained = await self.store.host_drains()  # written with the count, read with it
                full = self._hostdrains.absorb(r.host_id for r in drained) or full
                for row in d.fetched.values():
                    self._release_cache.add(row)
                for app_id in [i for i, inputs in d.apps.items() if inputs is None]:
                    self._release_cache.keep(app_id, set())  # a deleted app's rows
                if self.services is not None:  # another replica may have bound a service
                    self.services.forget(d.apps)
                for n, part in enumerate(model.parts(d, STEP_APPS)):
                    if n:
                        await asyncio.sleep(0)  # heartbeats answered between parts
                    changed |= m.absorb(part)
                if d.full:
                    model.freeze_heap()
                full = full or d.full
        self._seen = seen
        instances, hosts = self.soft.take_changes()
        await self.watches.instances(self.soft.statuses(), instances)
        for host in hosts:  # a host's memory may have changed
            self._host_info.pop(host, None)
        self._live = frozenset(s.heartbeat.host_id for s in self.soft.alive_hosts())
        dirty = changed | m.dirty(instances, hosts) | self._drains.due(now)
        dirty |= self._hostdrains.waiting & m.apps.keys()
        gone = {a for a in dirty if a not in m.apps}
        if self.settled(now) and not self._settled_pass:
            full, self._settled_pass = True, True
        full = full or (self._routes_held and self._routes_ready(now))
        if full:
            dirty |= m.apps.keys()
            gone |= self.routes.keys() - m.apps.keys()
        await self._pass(sorted(dirty - gone), gone, now)
        if full:
            model.freeze_heap()
        return True

    async def _pass(self, apps: list[str], gone: set[str], now: float) -> None:
        """Place, roll out, assign and route `apps` (and drop the `gone`), in
        steps of STEP_APPS apps (`reconcilestep.step`) with heartbeats
        answered between steps: a full pass over 50,000 instances must not
        leave runners unanswered for seconds. Assignments and routes change
        once, at the end."""
        statuses = self.soft.statuses()
        updates: dict[str, AppRoute | None] = dict.fromkeys(gone)
        self.book.stage(gone, [], lambda p: None)
        for name in gone:
            self._route_cache.forget(name)
        self._departures.forget(gone)
        self._drains.forget(gone)
        self._hostdrains.forget(gone)
        for i in range(0, len(apps), STEP_APPS):
            # Before the first step too: what came before it (the last part
            # of a read absorbed, the dirty apps found) is a step's worth.
            await asyncio.sleep(0)
            if not await reconcilestep.step(self, apps[i : i + STEP_APPS], statuses, updates, now):
                self._forget_desired()  # the lease ran out mid-pass: start afresh
                return
        m = self._model
        pending = {(r.app_id, r.version) for name in m.pending for r in m.apps[name].pending}
        for key in set(self._pending_since) - pending:
            del self._pending_since[key]
        for key in set(self._up_seen) - pending:
            del self._up_seen[key]
        if (notes := self._hostdrains.notes_now()) is not None:
            await self.store.note_host_drains(notes)
        moved = self.book.commit(self.soft.hosts)
        if self.client_for is not None:
            self.nudger.send(
                nudge.targets(moved, self.soft.hosts, self.assignments, self.fence),
                self.client_for,
            )
        self._departures.published(lambda h: a.version if (a := self.assignments.get(h)) else 0)
        self._routes_held = not self._routes_ready(now)
        if not self._routes_held:
            await self._publish_routes(updates, now)

    def _routes_ready(self, now: float) -> bool:
        placed = (p.host_id for ps in self._model.placed.values() for p in ps)
        return self.settled(now) or routes.hosts_heard(placed, self.soft.hosts)

    @property
    def table_published(self) -> bool:
        """This holder has published its first full table (routers asking before are refused)."""
        return self.fence > 0 and not self._snapshot_due

    async def end_rollout(self, app_name: str, rel: ReleaseRow, d: rollout.Decision) -> bool:
        """Write a rollout's end (`rolloutend.end_rollout`); True when `rel` went live."""
        live = await rolloutend.end_rollout(self.store, app_name, rel, d, self.after_live)
        self.deploy_ended.ring()
        return live

    async def _publish_routes(self, updates: dict[str, AppRoute | None], now: float) -> None:
        delta = routes.diff_apps(self.routes, updates, self.route_version, self.fence)
        for name, route in updates.items():
            if route is not None and (old := self.routes.get(name)) is not None:
                left = {b.instance_id for b in old.backends} - {
                    b.instance_id for b in route.backends
                }
                self._drains.unrouted(name, left, now, self.settings.drain_s)
            if route is None:
                self.routes.pop(name, None)
            else:
                self.routes[name] = route
        if self._snapshot_due:
            self._snapshot_due = False
            self.route_version += 1
            if self.publisher is not None:
                await self.publisher.publish("routes", self.route_snapshot())
            return
        if delta is None:
            return
        self.route_version = delta.version
        if self.publisher is not None:
            await self.publisher.publish("routes", delta)
