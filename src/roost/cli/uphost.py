"""`roost up`'s side of ROOST_ROLE_HOST=on: several roles in one process.

`roost up` still builds one program per role; `fold` then replaces each
group's members (ROOST_ROLE_HOST, `parse_groups`) by one program, named
`roles` (then `roles2`...), that runs `roost roles ROLE=METRICS_PORT ...`,
at its first member's place in the start order, up once every member's
readiness probe has passed, in order.

Everything else `roost up` reports still speaks of roles: DATA/up.json lists
each member with its host's process (`expand_states`), a reload's replaced
pids are each member's (`expand_reload`), so `roost status`, `roost up
--reload`'s report and a later release's take-over (which reads the pids
there) see every role. A reload replaces a host as a whole with SIGUSR2
(`host_steps`): the runner and the servicehost hand their tenants over, the
other members stop; the new host starts once the old one has gone.

Decisions here are pure; `retire_older` is the take-over's I/O.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from roost.cli.reload import HANDS_OVER, Step
from roost.cli.rolehost import HOST, HOSTABLE
from roost.proc import upstate
from roost.proc.supervise import Program

Probe = Callable[[Any], Awaitable[None]]


Groups = dict[str, list[str]]  # host program's name -> its members, in start order

# ROOST_ROLE_HOST=on: which roles share a process (see docs/architecture.md,
# the footprint's fourth round, for why these).
DEFAULT_GROUPS = "controller+builder+runner+servicehost"


def parse_groups(value: str) -> list[list[str]]:
    """ROOST_ROLE_HOST: "off", "on" (`DEFAULT_GROUPS`), or groups of roles
    joined by "+", separated by ","; ValueError, saying why, otherwise."""
    if value == "off":
        return []
    text = DEFAULT_GROUPS if value == "on" else value
    groups: list[list[str]] = []
    seen: set[str] = set()
    for part in text.split(","):
        group = [r.strip() for r in part.split("+")]
        for role in group:
            if role not in HOSTABLE:
                raise ValueError(
                    f"ROOST_ROLE_HOST: {role!r} cannot share a process "
                    f"(one of {', '.join(HOSTABLE)}; or 'on', 'off')"
                )
            if role in seen:
                raise ValueError(f"ROOST_ROLE_HOST: {role} is named twice")
            seen.add(role)
        if len(group) < 2:
            raise ValueError(f"ROOST_ROLE_HOST: {part!r} is one role: a group has two or more")
        groups.append(group)
    return groups


def host_name(index: int) -> str:
    """A host program's name: `roles`, then `roles2`, `roles3`..."""
    return HOST if index == 0 else f"{HOST}{index + 1}"


def groups_of(names: list[str], groups: list[list[str]]) -> Groups:
    """Each group's members that `roost up` runs (in `names`' order), by
    its program's name; a group left with fewer than two is not made."""
    out: Groups = {}
    for group in groups:
        members = [n for n in names if n in group]
        if len(members) >= 2:
            out[host_name(len(out))] = members
    return out


def members_of(groups: Groups) -> list[str]:
    return [m for members in groups.values() for m in members]


def specs(members: list[str], metrics: dict[str, str]) -> list[str]:
    """`roost roles` arguments: each member, with the metrics port `roost
    up` gave it (the controller serves its metrics on its API)."""
    out = []
    for role in members:
        url = metrics.get(role, "")
        port = url.rsplit(":", 1)[1].split("/")[0] if role != "controller" and url else ""
        out.append(f"{role}={port}" if port.isdigit() else role)
    return out


def all_of(probes: list[Probe]) -> Probe:
    """Up once every probe has passed, one after the other."""

    async def probe(proc: Any) -> None:
        for p in probes:
            await p(proc)

    return probe


def fold(programs: list[Program], hosts: dict[str, Program], groups: Groups) -> list[Program]:
    """`programs` with each group's members replaced by its host, at its
    first member's place."""
    host_of = {m: name for name, members in groups.items() for m in members}
    out: list[Program] = []
    for p in programs:
        name = host_of.get(p.name)
        if name is None:
            out.append(p)
        elif not any(q is hosts[name] for q in out):
            out.append(hosts[name])
    return out


def expand_states(
    states: dict[str, upstate.RoleStatus], groups: Groups
) -> dict[str, upstate.RoleStatus]:
    """Each member in its host's place, as its own role with the host's status."""
    out: dict[str, upstate.RoleStatus] = {}
    for name, state in states.items():
        for m in groups.get(name, [name]):
            out[m] = state
    return out


def expand_reload(
    status: upstate.ReloadStatus | None, groups: Groups
) -> upstate.ReloadStatus | None:
    """A reload's replaced pids with each host's pair given to each of its members."""
    if status is None or not groups:
        return status
    replaced: dict[str, list[int]] = {}
    for name, pair in status.replaced.items():
        for m in groups.get(name, [name]):
            replaced[m] = pair
    return msgspec.structs.replace(status, replaced=replaced)


def host_steps(steps: list[Step], groups: Groups) -> list[Step]:
    """A reload replaces a host with SIGUSR2: its runner and servicehost
    hand over, the rest stop; the successor waits for it to go (one port each)."""
    return [Step(s.role, signal.SIGUSR2, overlap=False) if s.role in groups else s for s in steps]


def older_retirements(members: list[str], hands_over: bool) -> list[tuple[str, int]]:
    """Which of an older `roost up`'s daemons go, and with which signal,
    before the hosts start in their place (all of them first: a host binds
    the ports of all its members at once). A hand-over: every member, as a
    reload would replace it (the runner and the servicehost leave their
    tenants). A restart (an older release that knows no hand-over): every
    member but the runner, which serves on until the apps have moved to the
    new one (`roost.cli.takeover.bring_up`)."""
    out: list[tuple[str, int]] = []
    for role in members:
        if hands_over:
            out.append((role, signal.SIGUSR2 if role in HANDS_OVER else signal.SIGTERM))
        elif role != "runner":
            out.append((role, signal.SIGTERM))
    return out
