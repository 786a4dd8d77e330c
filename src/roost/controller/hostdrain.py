"""Host drains: a drained host's instances start elsewhere before they stop there. Pure.

Theory of operation. An operator drains a host (`roost hosts drain HOST`)
before its runner is replaced by one that cannot adopt its instances (a
runner of 0.1.0 kills them when it stops), or before the host goes away,
as `kubectl drain` and Nomad's node drain do. The drained set is desired
state, stored (the `host_drains` table), so a new lease holder carries a
drain on from where the old one was.

A drained host takes no new placement. Each instance on it is *leaving*:
`place_around` runs the scheduler over every other live host with the
leaving instances left out, so the scheduler places a replacement for each
(the lowest free index: the leaving one's), and the leaving instance stays
placed beside it, make-before-break, until its process type has as many
*ready* copies elsewhere as it wants: reported up, and, where a leaving
copy is in the routers' table, in that table too (the replacement serves
before the old one leaves it). Then the leaving placement is dropped like
any other, and the usual drain of a dropped instance follows (drain.py:
out of the route table, ROOST_DRAIN_S, then its runner TERMs it).

Singleton types (singleton.py) must never run twice: their instance on a
drained host is dropped at once and its want held back for this pass, so
the next passes place it elsewhere once the host says the old one is gone,
stop-first as any move of a singleton.

A leaving instance with no replacement (no other live host has room) is
*stuck*: it stays where it is, and the drain says so (`note`). A leaving
instance whose type is no longer wanted (scaled down, an old release) is
dropped as it would be anywhere. Placements on a drained host that is down
are the scheduler's usual case: dropped and replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from roost.controller.scheduler import HostInfo, Key, Placement, Want, place
from roost.controller.store import ReleaseRow
from roost.wire.messages import AppRoute, InstanceStatus


@dataclass(frozen=True)
class Around:
    """What `place_around` decided for the apps of one call."""

    placements: list[Placement]
    # Leaving instances with no replacement anywhere: they stay put.
    stuck: list[Placement] = field(default_factory=list)
    # Leaving instances kept until their replacements are ready.
    waiting: list[Placement] = field(default_factory=list)


def place_around(
    wants: Iterable[Want],
    current: Iterable[Placement],
    hosts: Iterable[HostInfo],
    drained: Container[str],
    up: Container[str],
    routed: Mapping[str, Container[str]],
    stop_first: Callable[[Placement], bool],
    new_id: Callable[[Want, int], str],
    reserved: Mapping[str, int] | None = None,
    placed: Mapping[str, int] | None = None,
) -> Around:
    """`scheduler.place` with the `drained` hosts emptied make-before-break.

    `up`: instance ids reported up; `routed`: app -> the instance ids its
    published route table holds; `stop_first(p)`: p's type is a singleton."""
    hosts = list(hosts)
    live = {h.host_id for h in hosts if h.alive}
    open_hosts = [h for h in hosts if h.host_id not in drained]
    current = list(current)
    leaving = [p for p in current if p.host_id in drained and p.host_id in live]
    if not leaving:
        return Around(place(wants, current, open_hosts, new_id, reserved, placed))
    held = {p.key for p in leaving if stop_first(p)}
    wants = [w for w in wants if (w.app, w.release, w.process_type) not in held]
    rest = [p for p in current if not (p.host_id in drained and p.host_id in live)]
    new = place(wants, rest, open_hosts, new_id, reserved, placed)

    count = {(w.app, w.release, w.process_type): w.count for w in wants}
    by_key: dict[Key, list[Placement]] = {}
    for p in new:
        by_key.setdefault(p.key, []).append(p)
    leaving_by_key: dict[Key, list[Placement]] = {}
    for p in leaving:
        if p.key in count:  # else no longer wanted (or a singleton held): dropped
            leaving_by_key.setdefault(p.key, []).append(p)

    kept: list[Placement] = []
    stuck: list[Placement] = []
    for key, mine in leaving_by_key.items():
        elsewhere = by_key.get(key, [])
        app_routed = routed.get(key[0], ())
        must_route = any(p.instance_id in app_routed for p in mine)
        ready = [
            r.idx
            for r in elsewhere
            if r.instance_id in up and (not must_route or r.instance_id in app_routed)
        ]
        ready_idx = set(ready)
        keep = min(len(mine), max(0, count[key] - len(ready)))
        # Those whose own replacement is ready go first.
        mine.sort(key=lambda p: (p.idx in ready_idx, p.idx))
        kept += mine[:keep]
        unplaced = max(0, count[key] - len(elsewhere))
        stuck += mine[:unplaced]
    out = sorted([*new, *kept], key=lambda p: (p.key, p.idx, p.host_id))
    waiting = [p for p in kept if p not in stuck]
    return Around(out, stuck, waiting)


def note(stuck: Iterable[Placement]) -> dict[str, str]:
    """Drained host -> what keeps its drain from ending, for the operator."""
    by_host: dict[str, list[str]] = {}
    for p in sorted(stuck, key=lambda p: (p.host_id, p.app, p.process_type, p.idx)):
        by_host.setdefault(p.host_id, []).append(f"{p.app} {p.process_type}.{p.idx}")
    return {
        host: f"no other host has room for {', '.join(names)}: left where it is"
        for host, names in by_host.items()
    }


class HostDrains:
    """The lease holder's view of the drains: the drained hosts (read from
    the store), and per app what its last pass left stuck or waiting."""

    def __init__(self) -> None:
        self.drained: frozenset[str] = frozenset()
        self._stuck: dict[str, list[Placement]] = {}
        self._waiting: dict[str, list[Placement]] = {}
        self.notes: dict[str, str] = {}  # as last written to the store

    def absorb(self, drained: Iterable[str]) -> bool:
        """The stored drained set; True when it changed (a full pass is due)."""
        new = frozenset(drained)
        changed, self.drained = new != self.drained, new
        return changed

    def place(
        self,
        wants: Iterable[Want],
        current: Iterable[Placement],
        hosts: Iterable[HostInfo],
        new_id: Callable[[Want, int], str],
        reserved: Mapping[str, int],
        placed: Mapping[str, int],
        *,
        apps: Iterable[str],
        statuses: Mapping[str, InstanceStatus],
        routes: Mapping[str, AppRoute],
        release: Callable[[Placement], ReleaseRow | None],
    ) -> list[Placement]:
        """The reconcile's placement of `apps`: `scheduler.place` when no
        host is drained, else `place_around` (its outcome remembered).
        `routes`: the tables published last; `release(p)`: p's release row."""
        if not self.drained:
            self.forget(apps)
            return place(wants, current, hosts, new_id, reserved, placed)
        up = _Up(statuses)
        routed = _Routed(routes)

        def stop_first(p: Placement) -> bool:
            rel = release(p)
            return rel is not None and p.process_type in rel.spec.singletons

        around = place_around(
            wants, current, hosts, self.drained, up, routed, stop_first, new_id, reserved, placed
        )
        self.decided(apps, around)
        return around.placements

    def decided(self, apps: Iterable[str], around: Around) -> None:
        for name in apps:
            self._stuck.pop(name, None)
            self._waiting.pop(name, None)
        for p in around.stuck:
            self._stuck.setdefault(p.app, []).append(p)
        for p in around.waiting:
            self._waiting.setdefault(p.app, []).append(p)

    def forget(self, apps: Iterable[str]) -> None:
        for name in apps:
            self._stuck.pop(name, None)
            self._waiting.pop(name, None)

    @property
    def waiting(self) -> set[str]:
        """Apps with an instance kept on a drained host until its
        replacement is ready: each pass looks at them again."""
        return set(self._waiting)

    def notes_now(self) -> dict[str, str] | None:
        """Every drained host's note (stuck instances, else ""), when it
        differs from what was last written; None when nothing changed."""
        said = note(p for ps in self._stuck.values() for p in ps if p.host_id in self.drained)
        notes = {h: said.get(h, "") for h in self.drained}
        if notes == self.notes:
            return None
        self.notes = notes
        return notes


@dataclass(frozen=True)
class _Up:
    """The instance ids reported up, asked one at a time (no set of all built)."""

    statuses: Mapping[str, InstanceStatus]

    def __contains__(self, iid: object) -> bool:
        st = self.statuses.get(iid) if isinstance(iid, str) else None
        return st is not None and st.state == "up"


class _Routed(Mapping[str, Container[str]]):
    """App -> the instance ids of its published table, made when asked:
    only apps with an instance on a drained host are."""

    def __init__(self, routes: Mapping[str, AppRoute]) -> None:
        self._routes = routes
        self._made: dict[str, set[str]] = {}

    def __getitem__(self, app: str) -> set[str]:
        if app not in self._made:
            route = self._routes[app]
            self._made[app] = {b.instance_id for b in route.backends}
        return self._made[app]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)
