"""Which servicehost holds an app's services: placing a new app's, and
finding the holder of a binding recorded before holders were (pure).

Each servicehost holds different data: an app's database lives on one of
them only, so a request about it must reach that one. A new app's services
go where there is the most room: among the servicehosts that answered just
now with enough free disk, the one holding the fewest apps' services, then
the one with the most free disk (hosts sharing a disk report the same free
space; what they hold still tells them apart). An app's PostgreSQL and Redis
share a host: its second service goes where its first is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from roost.wire.messages import ServiceHostStatus

# A servicehost with less free disk than this (or this share of its disk)
# takes no new app: what it holds already needs the room to grow.
MIN_FREE_BYTES = 1 << 30
MIN_FREE_SHARE = 0.05


class NoPlace(Exception):
    """No servicehost can take (or be found to hold) the service; says why."""


def held_apps(report: ServiceHostStatus) -> set[str]:
    """The apps with a service on this servicehost, as it reports them."""
    return {s.app for s in report.servers if s.app}


def has_room(report: ServiceHostStatus) -> bool:
    floor = max(MIN_FREE_BYTES, int(report.disk_total_bytes * MIN_FREE_SHARE))
    return report.disk_free_bytes >= floor


def place(
    reports: Mapping[str, ServiceHostStatus],
    bound: Mapping[str, int],
    app_holder: str = "",
) -> str:
    """The servicehost for a new service of an app.

    `reports`: host id -> the status it answered with just now (hosts that
    did not answer are absent); `bound`: host id -> how many apps the state
    database records there (it knows of services provisioned a moment ago
    that a report may not list yet); `app_holder`: the host holding the app's
    other services ("" when it has none), which the new one joins.
    """
    if app_holder:
        if app_holder not in reports:
            raise NoPlace(
                f"servicehost {app_holder} holds the app's other services and does not answer"
            )
        return app_holder
    if not reports:
        raise NoPlace("no servicehost answers")
    roomy = [h for h, r in reports.items() if has_room(r)]
    if not roomy:
        full = ", ".join(sorted(reports))
        raise NoPlace(f"no servicehost has room for another app (all are nearly full: {full})")

    def load(host: str) -> tuple[int, int, str]:
        apps = max(len(held_apps(reports[host])), bound.get(host, 0))
        return (apps, -reports[host].disk_free_bytes, host)

    return min(roomy, key=load)


def holders(reports: Iterable[tuple[str, ServiceHostStatus]], app: str, kind: str) -> list[str]:
    """The servicehosts that report holding the app's `kind` service."""
    return sorted(
        {host for host, r in reports for s in r.servers if s.app == app and s.kind == kind}
    )


def find_holder(
    reports: Mapping[str, ServiceHostStatus], configured: int, app: str, kind: str
) -> str:
    """The holder of a binding recorded without one (before migration 0016).

    Only what the servicehosts say counts: the one that reports the service.
    With a single servicehost configured and answering, it is the holder
    even when its report lacks the service (a Redis that is not running is
    not listed): there is no other it could be on. Anything else is refused
    rather than guessed, since a request sent to the wrong servicehost finds
    nothing there and would answer as if the data did not exist.
    """
    found = holders(reports.items(), app, kind)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise NoPlace(f"{app}'s {kind} is reported by several servicehosts: {', '.join(found)}")
    if configured == 1 and len(reports) == 1:
        return next(iter(reports))
    if len(reports) < configured:
        raise NoPlace(
            f"no servicehost that answers holds {app}'s {kind} "
            f"({len(reports)} of {configured} answered); try again when all are up"
        )
    raise NoPlace(f"no servicehost reports holding {app}'s {kind}")


# ------------------------------------------------------------ servicehost pairs
#
# In a cluster with pairs (migration 0021) a new app goes on a pair, not a
# host: its database lives in the pair's Patroni cluster, on both. The pair
# with the most room takes it: of the pairs whose two servicehosts answered
# just now with room, the one holding the fewest apps, then the one whose
# fuller member has the most free disk. A pair with a member silent or full
# is degraded (no standby to fail over to, or no room to keep one): it takes
# a new app only when no pair is whole.


def place_pair(
    pairs: Mapping[str, tuple[str, str]],
    reports: Mapping[str, ServiceHostStatus],
    bound: Mapping[str, int],
) -> str:
    """The pair for a new app. `pairs`: name -> its servicehost ids;
    `reports`: host id -> status, for those that answered; `bound`: pair ->
    how many apps the state database records on it."""
    if not pairs:
        raise NoPlace("no servicehost pair is configured")

    def room(host: str) -> int | None:
        r = reports.get(host)
        return r.disk_free_bytes if r is not None and has_room(r) else None

    candidates = []
    for name, hosts in pairs.items():
        rooms = [room(h) for h in hosts]
        usable = [r for r in rooms if r is not None]
        if not usable:
            continue
        degraded = len(usable) < len(hosts)
        candidates.append((degraded, bound.get(name, 0), -min(usable), name))
    if not candidates:
        raise NoPlace(
            "no servicehost pair has a member that answers with room for another app "
            f"({', '.join(sorted(pairs))})"
        )
    return min(candidates)[3]


def pair_primary(answers: Mapping[str, int]) -> str | None:
    """The member whose Patroni answered `GET /primary` with 200, from
    address -> HTTP status (0: no answer). Not exactly one: None (a
    failover under way; the caller says so rather than guess)."""
    primaries = [addr for addr, status in answers.items() if status == 200]
    return primaries[0] if len(primaries) == 1 else None
