"""The controller process's shared state and its reconcile loop.

Theory of operation: every replica records heartbeats (soft state), stores
logs and build results, and answers queries. The replica holding the
`scheduler` lease additionally, every tick: reads desired state (apps, the
active and pending release of each, formation), places instances on live
hosts (pure `scheduler.place`), decides rollouts (pure `rollout.decide`),
turns placements into one declarative Assignment per host (sent in heartbeat
replies, stamped with the lease's fencing token), and publishes route-table
deltas. A new lease holder waits one grace period before placing, so hosts
that are alive but not yet heard from are not mistaken for dead ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass

from roost.controller import rollout, routes
from roost.controller.scheduler import HostInfo, Placement, Want, place
from roost.controller.services import ServiceBroker
from roost.controller.softstate import SoftState
from roost.controller.store import AppRow, ReleaseRow, Store
from roost.settings import Settings
from roost.state import leases
from roost.wire.messages import (
    AppRoute,
    Assignment,
    InstanceAssignment,
    InstanceStatus,
    LogLine,
    RouteSnapshot,
)
from roost.wire.pubsub import Publisher

log = logging.getLogger("roost.controller")

LEASE = "scheduler"


@dataclass
class HostAssignment:
    content: tuple[InstanceAssignment, ...]
    version: int


class Controller:
    def __init__(self, store: Store, settings: Settings, name: str) -> None:
        self.store = store
        self.settings = settings
        self.name = name
        self.holder_id = f"{name}:{os.getpid()}:{secrets.token_hex(4)}"
        self.soft = SoftState(settings.host_grace_s)
        self.fence = 0  # lease token while we hold it, else 0
        self.leader_since: float | None = None
        self.assignments: dict[str, HostAssignment] = {}
        self.routes: dict[str, AppRoute] = {}
        self.route_version = 0
        self.publisher: Publisher | None = None
        self.wake = asyncio.Event()
        self._release_cache: dict[tuple[int, int], ReleaseRow] = {}
        self._pending_since: dict[tuple[int, int], float] = {}
        # Set by the daemon: provisions and holds service credentials.
        self.services: ServiceBroker | None = None

    # ------------------------------------------------------------ helpers

    @property
    def is_leader(self) -> bool:
        return self.fence > 0

    def release_row(self, app_id: int, version: int) -> ReleaseRow:
        key = (app_id, version)
        row = self._release_cache.get(key)
        if row is None or row.status != "active":
            row = self.store.release(app_id, version)
            self._release_cache[key] = row
        return row

    def platform_log(
        self, app: str, line: str, process: str = "", source: str = "platform"
    ) -> None:
        self.store.append_logs(
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
        credentials, then the release's config vars (which may override them)."""
        env = self.services.environment(app_id) if self.services is not None else {}
        env.update(config)
        return env

    def restart_process(self, app: AppRow, process_type: str) -> None:
        """Replace the serving release's instances of one process type."""
        self.store.drop_placements(app.id, process_type)
        self.store.add_event("restart", f"{app.name}: restart {process_type}", app.id)
        self.wake.set()

    def where(self, app: str, process: str | None = None) -> list[dict[str, object]]:
        statuses = self.soft.statuses()
        out: list[dict[str, object]] = []
        for p in self.store.placements():
            if p.app != app or (process and p.process_type != process):
                continue
            st = statuses.get(p.instance_id)
            seen = self.soft.hosts.get(p.host_id)
            out.append(
                {
                    "instance_id": p.instance_id,
                    "process": f"{p.process_type}.{p.idx}",
                    "release": p.release,
                    "host_id": p.host_id,
                    "hostname": seen.heartbeat.hostname if seen else "",
                    "host_state": "up" if self.soft.alive(p.host_id) else "down",
                    "state": st.state if st else "unknown",
                    "port": st.port if st else 0,
                }
            )
        return sorted(out, key=lambda r: (str(r["process"]), str(r["host_id"])))

    def route_snapshot(self) -> RouteSnapshot:
        return RouteSnapshot(
            version=self.route_version, routes=list(self.routes.values()), fence=self.fence
        )

    # ------------------------------------------------------------ loops

    async def lease_loop(self) -> None:
        ttl = self.settings.lease_ttl_s
        while True:
            try:
                lease = await asyncio.to_thread(
                    leases.acquire, self.store.engine, LEASE, self.holder_id, ttl
                )
            except Exception:
                log.exception("lease renewal failed")
                lease = None
            if lease is None:
                if self.is_leader:
                    log.warning("lost the scheduler lease")
                self.fence, self.leader_since = 0, None
            elif lease.token != self.fence:
                log.info("holding the scheduler lease (fencing token %d)", lease.token)
                self.fence, self.leader_since = lease.token, time.monotonic()
                self.assignments.clear()
                self.wake.set()
            await asyncio.sleep(ttl / 3)

    async def reconcile_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)
            except TimeoutError:
                pass
            self.wake.clear()
            if not self.is_leader:
                continue
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile failed")

    async def housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                await asyncio.to_thread(self.store.trim_logs, self.settings.log_lines_kept)
            except Exception:
                log.exception("log trimming failed")

    def give_up_lease(self) -> None:
        if self.is_leader:
            leases.release(self.store.engine, LEASE, self.holder_id)
            self.fence = 0

    # ------------------------------------------------------------ reconcile

    async def reconcile_once(self) -> None:
        now = time.monotonic()
        for host_id in self.soft.mark_down(now):
            log.warning("host %s is down (silent for %.1fs)", host_id, self.settings.host_grace_s)
            self.store.add_event("host-down", f"host {host_id} is down")
        statuses = self.soft.statuses()
        apps = self.store.apps()
        app_ids = {a.name: a.id for a in apps}
        current = self.store.placements()

        wants: list[Want] = []
        pending: list[tuple[str, ReleaseRow]] = []
        serving: dict[str, ReleaseRow] = {}
        for a in apps:
            if a.current_release is not None:
                serving[a.name] = self.release_row(a.id, a.current_release)
        for r in self.store.releases_in("pending"):
            app_name = next((a.name for a in apps if a.id == r.app_id), None)
            if app_name is not None:
                pending.append((app_name, r))
        formations = {a.id: self.store.formation(a.id) for a in apps}
        for a in apps:
            if a.suspended:
                continue
            rels = [serving[a.name]] if a.name in serving else []
            rels += [r for n, r in pending if n == a.name]
            for rel in rels:
                for ptype, qty in formations[a.id].items():
                    if ptype in rel.spec.processes and qty > 0:
                        wants.append(
                            Want(a.name, rel.version, ptype, qty, self.settings.instance_memory_mb)
                        )

        settled = (
            self.leader_since is not None and now - self.leader_since >= self.settings.host_grace_s
        )
        if settled or not current:
            hosts = [
                HostInfo(s.heartbeat.host_id, True, s.heartbeat.memory_mb)
                for s in self.soft.alive_hosts()
            ]
            placed = place(wants, current, hosts, _new_instance_id)
            self.store.replace_placements(current, placed, app_ids)
        else:
            placed = current

        # Rollouts: promote or fail pending releases.
        for app_name, rel in pending:
            key = (rel.app_id, rel.version)
            started = self._pending_since.setdefault(key, now)
            mine = [
                (p.instance_id, p.process_type, p.idx)
                for p in placed
                if p.app == app_name and p.release == rel.version
            ]
            wanted_total = sum(
                w.count for w in wants if w.app == app_name and w.release == rel.version
            )
            d = rollout.decide(
                mine, wanted_total, statuses, started, now, self.settings.rollout_timeout_s
            )
            if d.verdict == "promote":
                self.store.promote(rel.app_id, rel.version)
                self._pending_since.pop(key, None)
                self.store.add_event("deploy", f"{app_name} v{rel.version} is live", rel.app_id)
                self.platform_log(
                    app_name, f"-----> v{rel.version} is live", rel.build_id or "", "build"
                )
                if rel.build_id:
                    self.store.finish_build(rel.build_id, "succeeded", release=rel.version)
                self.wake.set()
            elif d.verdict == "fail":
                self.store.fail_release(rel.app_id, rel.version, d.reason)
                self._pending_since.pop(key, None)
                self.store.add_event(
                    "deploy-failed", f"{app_name} v{rel.version}: {d.reason}", rel.app_id
                )
                self.platform_log(
                    app_name,
                    f"-----> v{rel.version} failed to start: {d.reason}",
                    rel.build_id or "",
                    "build",
                )
                serving_now = serving.get(app_name)
                if serving_now is not None:
                    self.platform_log(
                        app_name,
                        f"-----> v{serving_now.version} keeps serving",
                        rel.build_id or "",
                        "build",
                    )
                if rel.build_id:
                    self.store.finish_build(
                        rel.build_id, "failed", error=d.reason, release=rel.version
                    )
                self.wake.set()

        self._update_assignments(placed, apps)
        await self._update_routes(apps, placed, statuses)

    def _update_assignments(self, placed: list[Placement], apps: list[AppRow]) -> None:
        by_host: dict[str, list[InstanceAssignment]] = {}
        app_by_name = {a.name: a for a in apps}
        for p in placed:
            a = app_by_name.get(p.app)
            if a is None:
                continue
            rel = self.release_row(a.id, p.release)
            by_host.setdefault(p.host_id, []).append(
                InstanceAssignment(
                    instance_id=p.instance_id,
                    app=p.app,
                    release=p.release,
                    image_digest=rel.image_digest,
                    process_type=p.process_type,
                    spec=rel.spec,
                    env=self.instance_env(a.id, rel.config),
                )
            )
        hosts = set(by_host) | set(self.assignments) | set(self.soft.hosts)
        for host_id in hosts:
            content = tuple(sorted(by_host.get(host_id, []), key=lambda i: i.instance_id))
            old = self.assignments.get(host_id)
            if old is None or old.content != content:
                version = (old.version if old else 0) + 1
                self.assignments[host_id] = HostAssignment(content=content, version=version)

    async def _update_routes(
        self, apps: list[AppRow], placed: list[Placement], statuses: dict[str, InstanceStatus]
    ) -> None:
        routing: list[routes.AppRouting] = []
        domains: dict[int, list[str]] = {}
        for d in self.store.domains():
            domains.setdefault(d.app_id, []).append(d.hostname)
        for a in apps:
            rel = (
                self.release_row(a.id, a.current_release) if a.current_release is not None else None
            )
            web = ""
            if rel is not None and rel.spec.web_process is not None:
                web = rel.spec.web_process.name
            mine = [
                p
                for p in placed
                if p.app == a.name
                and rel is not None
                and p.release == rel.version
                and p.process_type == web
            ]
            routing.append(
                routes.AppRouting(
                    app=a.name,
                    suspended=a.suspended,
                    release=rel.version if rel else 0,
                    spec=rel.spec if rel else None,
                    static_digest=rel.static_digest if rel else "",
                    domains=tuple(domains.get(a.id, ())),
                    static_routes=tuple(rel.static_routes) if rel else (),
                    web_instances=tuple(p.instance_id for p in mine),
                    host_of={p.instance_id: p.host_id for p in mine},
                )
            )
        new = routes.build_routes(
            routing, statuses, self.settings.default_domain, self.soft.addresses()
        )
        delta = routes.diff(self.routes, new, self.route_version, self.fence)
        if delta is None:
            return
        self.routes = new
        self.route_version = delta.version
        if self.publisher is not None:
            await self.publisher.publish("routes", delta)


def _new_instance_id(w: Want, idx: int) -> str:
    return f"{w.app}-{w.process_type}-{idx}-v{w.release}-{secrets.token_hex(3)}"


def host_addresses_json(addrs: list[str]) -> str:
    return json.dumps(addrs)
