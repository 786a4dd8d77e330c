"""What `roost up` is doing, for whoever asks: DATA/up.json.

`roost up` rewrites the file whenever a role changes state, and once more
when it ends (with the error that ended it, if one did). The platform is
"ready" when every role it runs is up (`roost.cli.readiness`): that is what
`roost status --wait`, `scripts/demo` and the tests wait on, and why a
deploy that failed can say which role is down and what it last said.

The waiting decision is a pure function (`verdict`) over what the file says,
when it was written and whether its `roost up` lives: a file left by an
earlier run does not count as this run's failure. The same for a reload
(`roost up --reload`, `roost.cli.reload`): the file carries the last one's
progress, and `reload_verdict` says whether the one an asker waits for is
over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec

FILE = "up.json"


class RoleStatus(msgspec.Struct, frozen=True, kw_only=True):
    # pending, starting, up, backoff, stopping, stopped or failed
    state: str
    pid: int = 0
    restarts: int = 0
    # Why it last exited or failed to start, then its last lines on stderr.
    last_error: str = ""


class ReloadStatus(msgspec.Struct, frozen=True, kw_only=True):
    started_at: float  # wall clock, when `roost up` began it
    finished_at: float = 0.0  # 0 while it runs
    # role -> [old pid, new pid], for each role replaced so far
    replaced: dict[str, list[int]] = {}
    error: str = ""  # why it stopped short, when it did


class UpStatus(msgspec.Struct, frozen=True, kw_only=True):
    pid: int  # of `roost up`
    roles: dict[str, RoleStatus]
    ready: bool = False
    over: bool = False  # `roost up` is stopping or has stopped
    error: str = ""  # what stopped it, when something did
    reload: ReloadStatus | None = None  # the last reload, if one was asked for
    # The Roost release of this `roost up`; "" from 0.1.0, which knows no
    # reload: a newer one takes over from it (roost.cli.takeover).
    release: str = ""


def path(data: Path) -> Path:
    return data / FILE


def save(data: Path, status: UpStatus) -> None:
    """Replace the file at once: a reader sees the old status or the new one."""
    target = path(data)
    tmp = target.with_name(f".{FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.encode(status))
    os.replace(tmp, target)


def load(data: Path) -> tuple[UpStatus, float] | None:
    """The status and when it was written; None when there is none (or it is unreadable)."""
    try:
        raw = path(data).read_bytes()
        written = path(data).stat().st_mtime
        return msgspec.json.decode(raw, type=UpStatus), written
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_words(error: str) -> str:
    """The reason and the last line the role wrote: a traceback's last line
    is its exception, and a daemon's named exit ends with its message."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"


def down_roles(status: UpStatus) -> list[str]:
    """One line for each role that is not up, saying why when it is known."""
    out = []
    for name, role in status.roles.items():
        if role.state == "up":
            continue
        line = f"{name} is {role.state}"
        if role.restarts:
            line += f" (restarted {role.restarts} time{'s' if role.restarts != 1 else ''})"
        why = last_words(role.last_error)
        out.append(f"{line}: {why}" if why else line)
    return out


Verdict = Literal["ready", "failed", "wait"]


def verdict(
    loaded: tuple[UpStatus, float] | None, since: float, is_alive: bool, pid: int | None = None
) -> Verdict:
    """Whether a waiter that started at `since` is done.

    Ready: the file says so and its `roost up` lives. Failed: the file says
    `roost up` is over, and was written after the waiter started (an older
    file is an earlier run's: the new one may still be starting). Else wait.
    With `pid`, only that `roost up`'s status counts: one just started on a
    directory where another runs takes it over, and until it writes its own
    the file is the other's, ready all along.
    """
    if loaded is None:
        return "wait"
    status, written = loaded
    if pid is not None and status.pid != pid:
        return "wait"
    if status.ready and not status.over and is_alive:
        return "ready"
    if (status.over or not is_alive) and written >= since:
        return "failed"
    return "wait"


def reload_verdict(status: UpStatus, asked_at: float, is_alive: bool) -> Verdict:
    """Whether the reload asked for at `asked_at` (SIGHUP sent then) is over:
    "ready" once a reload that started after that has finished without
    error, "failed" once one has finished with an error or `roost up` is
    gone or stopping. An earlier reload, even one still running when the
    signal came, is not the one asked for."""
    r = status.reload
    if r is not None and r.started_at >= asked_at and r.finished_at:
        return "failed" if r.error else "ready"
    if status.over or not is_alive:
        return "failed"
    return "wait"


class NotReady(Exception):
    pass


def wait_ready(
    data: Path,
    timeout: float,
    since: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    pid: int | None = None,
) -> UpStatus:
    """Block until `roost up` on `data` (the one of `pid`, when given) is
    ready; NotReady says why it is not."""
    start = clock() if since is None else since
    deadline = clock() + timeout
    while True:
        loaded = load(data)
        if pid is not None and not alive(pid) and (loaded is None or loaded[0].pid != pid):
            raise NotReady(f"roost up (pid {pid}) is not running on {data}")
        decided = verdict(loaded, start, loaded is not None and alive(loaded[0].pid), pid)
        if decided == "ready" and loaded is not None:
            return loaded[0]
        if decided == "failed" and loaded is not None:
            status = loaded[0]
            why = [status.error] if status.error else down_roles(status)
            raise NotReady("roost up stopped" + "".join(f"\n  {w}" for w in why if w))
        if clock() >= deadline:
            if loaded is None:
                raise NotReady(f"no roost up is running on {data} (waited {timeout:g}s)")
            lines = down_roles(loaded[0])
            raise NotReady(
                f"the platform was not ready within {timeout:g}s"
                + "".join(f"\n  {line}" for line in lines)
            )
        sleep(0.2)


def down_here(data: Path) -> list[str]:
    """The roles a live `roost up` on `data` reports not up, one line each
    with why (`down_roles`); none when no `roost up` lives there. The CLI's
    `roost deploy` and the controller (for a deploy that found no builder,
    which `git push` shows too) both say it."""
    loaded = load(data)
    if loaded is None or not alive(loaded[0].pid):
        return []
    return down_roles(loaded[0])


# How a deploy's failure says what `down_here` found; the CLI looks for it
# so that it does not say the same twice.
DOWN_HERE = "on this machine (roost status)"


def down_report(data: Path) -> str:
    """For an error message: the local platform's roles that are down, and
    why (empty when there is no live `roost up` on `data`, or all are up)."""
    lines = down_here(data)
    if not lines:
        return ""
    return f"\n{DOWN_HERE}:" + "".join(f"\n  {line}" for line in lines)
