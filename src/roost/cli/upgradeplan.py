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
