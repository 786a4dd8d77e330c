"""`roost up`'s side of ROOST_ROLE_HOST=on: several roles in one process.

`roost up` still builds one program per role; `host_program` then folds the
hostable ones (`roost.cli.rolehost.HOSTABLE`) into one program, named
`rolehost.HOST`, that runs `roost roles ROLE=METRICS_PORT ...`. It takes the
controller's place at the head of the start order (the controller is in it)
and is up once every member's readiness probe has passed, in order.

Everything else `roost up` reports still speaks of roles: DATA/up.json lists
each member with the host's process (`expand_states`), a reload's replaced
pids are each member's (`expand_reload`), so `roost status`, `roost up
--reload`'s report and a later release's take-over (which reads the pids
there) see every role. A reload replaces the host as a whole with SIGUSR2
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


def members_of(names: list[str]) -> list[str]:
    """The roles among `names` (in their order) that share the host."""
    return [n for n in names if n in HOSTABLE]


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


def fold(programs: list[Program], host: Program) -> list[Program]:
    """`programs` with the members replaced by `host`, at the first member's place."""
    out: list[Program] = []
    for p in programs:
        if p.name in HOSTABLE:
            if not any(q is host for q in out):
                out.append(host)
        else:
            out.append(p)
    return out


def expand_states(
    states: dict[str, upstate.RoleStatus], members: list[str]
) -> dict[str, upstate.RoleStatus]:
    """Each member in the host's place, as its own role with the host's status."""
    out: dict[str, upstate.RoleStatus] = {}
    for name, state in states.items():
        if name == HOST and members:
            for m in members:
                out[m] = state
        else:
            out[name] = state
    return out


def expand_reload(
    status: upstate.ReloadStatus | None, members: list[str]
) -> upstate.ReloadStatus | None:
    """A reload's replaced pids with the host's pair given to each member."""
    if status is None or HOST not in status.replaced:
        return status
    replaced: dict[str, list[int]] = {}
    for name, pair in status.replaced.items():
        for m in members if name == HOST else [name]:
            replaced[m] = pair
    return msgspec.structs.replace(status, replaced=replaced)


def host_steps(steps: list[Step]) -> list[Step]:
    """A reload replaces the host with SIGUSR2: its runner and servicehost
    hand over, the rest stop; the successor waits for it to go (one port each)."""
    return [Step(s.role, signal.SIGUSR2, overlap=False) if s.role == HOST else s for s in steps]


def older_retirements(members: list[str], hands_over: bool) -> list[tuple[str, int]]:
    """Which of an older `roost up`'s daemons go, and with which signal,
    before the host starts in their place. A hand-over: every member, as a
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
