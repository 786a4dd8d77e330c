"""One step of the scheduler lease holder's reconcile pass (`core.Controller._pass`).

For a batch of apps something happened to: places their instances on the
live hosts (pure `scheduler.place`, around drained hosts), decides their
pending releases' rollouts (pure `rollout.decide`), stages their
assignments (`assign.AssignmentBook.stage`) and builds their routes. It
writes placements and a rollout's end, but publishes nothing: the pass
commits assignments and publishes routes once, after its last step.

The state it reads and keeps is the holder's, on the `Controller`: the pass
that calls it owns that state, so these are functions of the controller
rather than a class beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from roost.controller import desired, rollout, routes, singleton
from roost.controller.assign import AssignmentInputs
from roost.controller.scheduler import HostInfo, Placement, Want, new_instance_id, no_room
from roost.controller.store import ReleaseRow
from roost.wire.messages import AppRoute, InstanceStatus

if TYPE_CHECKING:
    from roost.controller.core import Controller


async def step(
    c: Controller,
    apps: list[str],
    statuses: Mapping[str, InstanceStatus],
    updates: dict[str, AppRoute | None],
    now: float,
) -> bool:
    """One step of a pass; False when the lease ran out before a write."""
    m = c._model
    for name in apps:  # keep exactly the release rows these apps need
        a = m.apps[name]
        c._release_cache.keep(a.row.id, a.needed([*m.placed[name], *c._drains.draining(name)]))
    memory = c.settings.instance_memory_mb
    wants: dict[str, list[Want]] = {}
    serving: dict[str, ReleaseRow | None] = {}
    placeable: dict[str, list[Want]] = {}  # wants less singletons held back
    for name in apps:
        wants[name], serving[name] = desired.wants(m.apps[name], c._release_cache, memory)
        wants[name], placeable[name] = singleton.arrange(
            wants[name], m.apps[name].row.id, c._release_cache, serving[name],
            m.placed[name], statuses, c._departures.waiting(name, c._acked),
        )  # fmt: skip
    if apps and (c.settled(now) or not m.by_id):
        old = [p for name in apps for p in m.placed[name]]
        reserved, count = m.others(apps)
        hosts = [_info(c, h) for h in sorted(c._live)]
        placed = c._hostdrains.place(
            [w for name in apps for w in placeable[name]],
            old,
            hosts,
            new_instance_id,
            reserved,
            count,
            apps=apps,
            statuses=statuses,
            routes=c.routes,
            release=lambda p: c._release_cache.get((m.apps[p.app].row.id, p.release)),
        )
        after: dict[str, list[Placement]] = {name: [] for name in apps}
        for p in placed:
            after[p.app].append(p)
        if {p.instance_id for p in placed} != {p.instance_id for p in old}:
            if not c.is_leader:
                return False  # decide nothing
            ids = {name: m.apps[name].row.id for name in apps}
            version = await c.store.replace_placements(old, placed, ids)
            for name in apps:
                was = m.set_placements(name, after[name])
                c._departures.dropped(
                    name, ids[name], c._release_cache, was,
                    {p.instance_id for p in after[name]}, c.fence,
                )  # fmt: skip
            c._reader.wrote_placements(after, version)
        # Every app of this call at once: each one's placements take room
        # from the others'.
        short = no_room([w for name in apps for w in placeable[name]], placed, hosts, reserved)
        for name in apps:
            m.note_placed(name, wants[name], after[name])
            c._no_room[name] = {k: why for k, why in short.items() if k[0] == name}

    for name in apps:
        for rel in m.apps[name].pending:
            if await _rollout(c, name, rel, m.placed[name], wants[name], statuses, now):
                # Routed in this pass, not the next: the deploy already
                # says "is live", and a request sent on that must be served.
                serving[name] = rel
        if await c.autorollback.look(name, serving[name], m.placed[name], statuses):
            c.wake.set()
    if c.services is not None:  # instance_env reads them from its cache
        await c.services.warm(m.apps[name].row.id for name in apps)
    _stage_assignments(c, apps, now)
    addresses = c.soft.addresses()
    for name in apps:
        updates[name] = _route(c, name, serving[name], statuses, addresses)
    return True


def _info(c: Controller, host_id: str) -> HostInfo:
    info = c._host_info.get(host_id)
    if info is None:
        memory = c.soft.hosts[host_id].heartbeat.memory_mb
        info = c._host_info[host_id] = HostInfo(host_id, True, memory)
    return info


async def _rollout(
    c: Controller,
    app_name: str,
    rel: ReleaseRow,
    mine_all: list[Placement],
    wants: list[Want],
    statuses: Mapping[str, InstanceStatus],
    now: float,
) -> bool:
    """Decide a pending release's rollout; True when it went live."""
    key = (rel.app_id, rel.version)
    started = c._pending_since.setdefault(key, now)
    mine = [(p.instance_id, p.process_type, p.idx) for p in mine_all if p.release == rel.version]
    wanted_total = sum(w.count for w in wants if w.release == rel.version)
    short = c._no_room.get(app_name, {})
    full = next((why for k, why in sorted(short.items()) if k[1] == rel.version), "")
    seen = c._up_seen[key] = rollout.note_up(c._up_seen.get(key, {}), mine, statuses, now)
    d = rollout.decide(
        mine, wanted_total, statuses, started, now, c.settings.rollout_timeout_s, full,
        up_since=seen, settle_s=rollout.WORKER_SETTLE_S,
    )  # fmt: skip
    if d.verdict == "wait":
        return False
    c._pending_since.pop(key, None)
    c._up_seen.pop(key, None)
    live = await c.end_rollout(app_name, rel, d)
    c.wake.set()
    return live


def _stage_assignments(c: Controller, apps: list[str], now: float) -> None:
    m = c._model
    # Per process type too: each type's instances may have their own size.
    inputs: dict[tuple[int, int, str], AssignmentInputs | None] = {}

    def inputs_of(p: Placement) -> AssignmentInputs | None:
        a = m.apps.get(p.app)
        if a is None:
            return None
        key = (a.row.id, p.release, p.process_type)
        if key not in inputs:
            rel = c._release_cache.get((a.row.id, p.release))
            inputs[key] = (
                None
                if rel is None
                else AssignmentInputs(
                    rel.image_digest,
                    rel.spec,
                    c.instance_env(a.row.id, rel.config),
                    app_key=a.row.key,
                    app_id=a.row.id,
                    memory_mb=m.memory_of(p),
                    data_proxy=c.data_proxy(a.row.id),
                    data_quota_mb=a.row.data_quota_mb,
                )
            )
        return inputs[key]

    staged: list[Placement] = []
    for name in apps:
        route = c.routes.get(name)  # as the routers hold it: published last pass
        routed = {b.instance_id for b in route.backends} if route is not None else set()
        staged += c._drains.stage(name, m.placed[name], routed, c._live, now, c.settings.drain_s)
    c.book.stage(apps, staged, inputs_of)


def _route(
    c: Controller,
    name: str,
    rel: ReleaseRow | None,
    statuses: Mapping[str, InstanceStatus],
    addresses: Mapping[str, str],
) -> AppRoute:
    routing = routes.app_routing(c._model.apps[name], c._model.placed[name], rel)
    return c._route_cache.route(routing, statuses, c.settings.default_domain, addresses)
