"""`roost cluster upgrade`'s decisions, as pure functions over what it saw.

Theory of operation. A rolling upgrade replaces one host's daemons at a
time while the others serve, so neighbouring releases run side by side
(the wire and the migrations allow it: roost.wire.version, tests/state's
expand-only check). The order:

- Controller hosts first, since a newer controller must already run when
  a newer runner or router speaks to it; one at a time, so a majority of
  the API and the scheduler lease stay up; the lease holder's host last of
  them, so the lease moves once, to a replica already upgraded.
- Then the hosts serving the other daemons (builder, servicehost,
  backupd, gateway), then runners, then routers: what serves the apps'
  visitors last, once everything it depends on is new.
- Within a rank, hosts by address, so two runs agree.

A host is healthy again when every role it runs answers as the target
release: a controller's /api/health says the version; a runner's host is
up in /api/hosts with that release and a heartbeat received after its
replacement ended; the other roles' endpoints accept connections (they
report no version). The upgrade stops at the first host that is not
healthy by its deadline (or whose replacement command failed), leaving
the hosts after it on the old release, and says which host and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The rank of a host is that of its earliest role here.
ROLE_ORDER = ("controller", "builder", "servicehost", "backupd", "gateway", "runner", "router")


@dataclass(frozen=True)
class Member:
    host: str  # its address, as the cluster's identities name it
    roles: tuple[str, ...]


def members(identities: Iterable[tuple[str, str]]) -> list[Member]:
    """(role, host) pairs -> one Member per host, its roles in ROLE_ORDER."""
    by_host: dict[str, set[str]] = {}
    for role, host in identities:
        by_host.setdefault(host, set()).add(role)
    return [
        Member(host, tuple(r for r in ROLE_ORDER if r in roles))
        for host, roles in sorted(by_host.items())
        if any(r in ROLE_ORDER for r in roles)
    ]


def order(hosts: Iterable[Member], lease_holder: str | None) -> list[Member]:
    """The hosts in the order they are replaced (see the module's doc)."""

    def key(m: Member) -> tuple[int, int, str]:
        rank = min(ROLE_ORDER.index(r) for r in m.roles)
        holder = 1 if rank == 0 and m.host == lease_holder else 0
        return rank, holder, m.host

    return sorted(hosts, key=key)


def select(planned: list[Member], only: Iterable[str]) -> list[Member]:
    """The plan limited to the hosts named (all when none is); a name that is
    no member's raises ValueError."""
    wanted = list(only)
    known = {m.host for m in planned}
    unknown = [h for h in wanted if h not in known]
    if unknown:
        raise ValueError(f"not hosts of this cluster: {', '.join(unknown)}")
    return [m for m in planned if not wanted or m.host in wanted]


@dataclass(frozen=True)
class RunnerSeen:
    state: str  # "up" or "down", as /api/hosts says
    release: str  # "" from a runner of 0.1.0
    beat_at: float  # when its last heartbeat came (the upgrader's clock)


@dataclass(frozen=True)
class Seen:
    """One look at a replaced host's daemons."""

    controller_version: str | None = None  # /api/health's; None: no answer
    runner: RunnerSeen | None = None  # None: /api/hosts does not list it (or no answer)
    accepting: Mapping[str, bool] = field(default_factory=dict)  # role -> its endpoint accepts


def unmet(roles: Iterable[str], seen: Seen, target: str, replaced_at: float) -> list[str]:
    """What still keeps the host from being healthy on `target` (empty: it is)."""
    out: list[str] = []
    for role in roles:
        if role == "controller":
            if seen.controller_version is None:
                out.append("its controller's API does not answer")
            elif seen.controller_version != target:
                out.append(f"its controller runs {seen.controller_version or 'an older release'}")
        elif role == "runner":
            r = seen.runner
            if r is None:
                out.append("the controllers do not list its runner")
            elif r.state != "up":
                out.append(f"its runner is {r.state}")
            elif r.release != target:
                out.append(f"its runner runs {r.release or '0.1.0'}")
            elif r.beat_at <= replaced_at:
                out.append("no heartbeat from its runner since it was replaced")
        elif not seen.accepting.get(role, False):
            out.append(f"its {role} does not accept connections")
    return out


@dataclass(frozen=True)
class Verdict:
    state: str  # "healthy", "waiting", "failed"
    why: str = ""


def judge(
    roles: Iterable[str],
    seen: Seen,
    target: str,
    replaced_at: float,
    now: float,
    deadline: float,
) -> Verdict:
    """Healthy, still waiting, or failed: not healthy by its deadline."""
    missing = unmet(roles, seen, target, replaced_at)
    if not missing:
        return Verdict("healthy")
    why = "; ".join(missing)
    return Verdict("failed" if now >= deadline else "waiting", why)


def backup_step(status: Mapping[str, object], no_backup: bool) -> tuple[bool, str]:
    """(capture a platform backup first, what to say) from GET /api/backups.

    No backupd configured: refused unless --no-backup says to go on without
    one (an upgrade may migrate the state database; see controller/upgrade.py
    for the copy each controller still keeps on its disk).
    """
    if no_backup:
        return False, "no platform backup first (--no-backup)"
    if not status.get("configured", True):
        raise ValueError(
            "this cluster has no backupd, so no backup of its state can be taken before the "
            "upgrade: configure one (roost cluster init --backupds), or pass --no-backup"
        )
    return True, "a platform backup first"


# ------------------------------------------------------------ drains


def needs_drain(roles: Iterable[str], runner_release: str | None, always: bool) -> bool:
    """Whether a host's runner is drained before its replacement: always
    with --drain, else when the runner running now cannot hand its instances
    over to its successor (0.1.0's, release "", kills them as it stops).
    `runner_release` None: the controllers do not list it (nothing to move)."""
    if "runner" not in roles or runner_release is None:
        return False
    return always or runner_release == ""


@dataclass(frozen=True)
class DrainSeen:
    """A drained host's row of /api/hosts."""

    drained: bool
    instances: int  # what its runner last reported holding
    note: str = ""  # what keeps the drain from ending ("" when nothing)
    beat_at: float = 0.0  # when that report came (the upgrader's clock)


def servicehost_warning(roles: Iterable[str], runner_releases: Iterable[str]) -> str:
    """What to say before a servicehost is replaced in a cluster still on
    0.1.0 (a runner reports release ""): a servicehost daemon of 0.1.0
    stops PostgreSQL and Redis with it (they outlive their daemon only from
    0.2.0 on), so the databases it serves restart."""
    if "servicehost" not in roles or "" not in set(runner_releases):
        return ""
    return (
        "its servicehost may be of 0.1.0, which stops PostgreSQL and Redis as it stops: "
        "the apps' databases on it restart (their connections are cut once)"
    )


def drain_verdict(seen: DrainSeen | None, since: float, now: float, deadline: float) -> Verdict:
    """Healthy once the host holds no instance, as a heartbeat sent after
    the drain began says; failed by the deadline, naming what is stuck."""
    if seen is None:
        return Verdict("failed" if now >= deadline else "waiting", "the controllers do not list it")
    if not seen.drained:
        return Verdict("failed", "it is not drained (undrained meanwhile?)")
    if seen.instances == 0 and seen.beat_at > since:
        return Verdict("healthy")
    why = f"it still holds {seen.instances} instance(s)"
    if seen.note:
        why += f": {seen.note}"
    return Verdict("failed" if now >= deadline else "waiting", why)
