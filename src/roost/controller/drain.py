"""Draining: a routed web instance leaves the route table before its runner stops it. Pure.

Theory of operation: a reconcile pass publishes the route table and the
hosts' assignments at its end, together, but they travel differently:
routes by pub/sub to every router, assignments in the replies to runners'
heartbeats. Had an instance left both at once, its runner could TERM it
while a router still sent it requests. So when a pass would drop an
instance that the routers hold as a backend (the published table names
it: a web instance of the serving release that answered), the instance
leaves the route table in that pass but stays in its host's assignment,
*draining*, for `drain_s`; the first pass after that drops it, and its
runner stops it gracefully (runner/plan.py). Which drops this covers:
promotion (the old release's web instances), scale-down, restart, and
anything else that takes a placement away. Instances that were not routed
stop at once, as before: other process types, a failed release's, and
any on a host that is down.

"Routed" means in a table the routers may still hold: the one published
last, or one published less than `drain_s` ago. A pass that promotes a
release routes its instances at once (the deploy says "is live" in that
pass), so the old release's instances have already left the published
table when the next pass drops them; they still drain, since a router may
not have applied that table yet.

The book lives in the lease holder's memory only: a holder that takes over
mid-drain does not know of it and drops the instance at once.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass

from roost.controller.scheduler import Placement


@dataclass(frozen=True)
class Draining:
    placement: Placement
    until: float  # monotonic clock: dropped from the assignment from then on


def to_drain(
    assigned: Iterable[Placement],
    kept: Container[str],
    routed: Container[str],
    live_hosts: Container[str],
    now: float,
    drain_s: float,
) -> list[Draining]:
    """Of the placements `assigned` so far, those leaving (not `kept`) that
    must drain first: routed, on a live host. None when `drain_s` is 0."""
    if drain_s <= 0:
        return []
    return [
        Draining(p, now + drain_s)
        for p in assigned
        if p.instance_id not in kept and p.instance_id in routed and p.host_id in live_hosts
    ]


@dataclass(frozen=True)
class _Either:
    a: Container[str]
    b: Container[str]

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b


class DrainBook:
    """Each app's draining instances, and the placements its hosts were last told."""

    def __init__(self) -> None:
        self._draining: dict[str, dict[str, Draining]] = {}  # app -> instance id -> drain
        self._assigned: dict[str, list[Placement]] = {}  # app -> placements staged last
        # app -> instance id -> until when a router may still hold it as a backend
        self._unrouted: dict[str, dict[str, float]] = {}

    def unrouted(self, app: str, ids: Collection[str], now: float, drain_s: float) -> None:
        """`ids` left the app's published route table at `now`."""
        if drain_s > 0 and ids:
            self._unrouted.setdefault(app, {}).update(dict.fromkeys(ids, now + drain_s))

    def stage(
        self,
        app: str,
        placed: Collection[Placement],
        routed: Container[str],
        live_hosts: Container[str],
        now: float,
        drain_s: float,
    ) -> list[Placement]:
        """What the app's hosts are to run now: `placed`, and what drains.

        Instances the last call staged and `placed` lacks start draining when
        they must (`to_drain`); drains whose time is up end here."""
        kept = {p.instance_id for p in placed}
        drains = self._draining.get(app, {})
        recent = {i: until for i, until in self._unrouted.pop(app, {}).items() if until > now}
        if recent:
            self._unrouted[app] = recent
            routed = _Either(routed, recent)
        for d in to_drain(self._assigned.get(app, ()), kept, routed, live_hosts, now, drain_s):
            drains.setdefault(d.placement.instance_id, d)
        drains = {iid: d for iid, d in drains.items() if d.until > now and iid not in kept}
        if drains:
            self._draining[app] = drains
        else:
            self._draining.pop(app, None)
        out = [*placed, *(d.placement for d in drains.values())]
        self._assigned[app] = out
        return out

    def draining(self, app: str) -> list[Placement]:
        return [d.placement for d in self._draining.get(app, {}).values()]

    def due(self, now: float) -> set[str]:
        """Apps with a drain whose time is up: a pass must stage them again."""
        return {
            app
            for app, drains in self._draining.items()
            if any(d.until <= now for d in drains.values())
        }

    def forget(self, apps: Iterable[str]) -> None:
        """Deleted apps: nothing of theirs drains."""
        for app in apps:
            self._draining.pop(app, None)
            self._unrouted.pop(app, None)
            self._assigned.pop(app, None)

    def clear_assigned(self) -> None:
        """A new fence: the hosts' assignments are rebuilt from nothing, so what
        they were told before is no base for drains (those under way go on)."""
        self._assigned.clear()
