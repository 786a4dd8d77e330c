"""What a supervisor of long-running children should do: pure functions over data.

One `Child` record per supervised program; `roost.proc.supervise` performs
the actions and feeds back what happened. Rules:

  - a wanted child without a process starts: at once when new, after its
    backoff when it failed;
  - a child with a readiness probe is "starting" until the probe answers,
    then "up"; one that does not answer within `ready_timeout_s` is stopped
    and that counts as a failure (a hung start);
  - an exit nobody asked for is a failure: the backoff grows with each
    consecutive one (`roost.proc.backoff`), and a run that stayed up
    `reset_after_s` starts the count again;
  - an exit status in `policy.fatal` (a configuration error) is final: the
    child is "failed" and the whole supervisor stops, since the same start
    would fail the same way;
  - stopping (a child removed, or everything): the stop signal to its
    process group, SIGKILL once the grace period has passed, and the record
    is forgotten once its process is gone. With `in_order`, everything stops
    one child at a time, the last added first (the order `roost up` needs:
    runners say goodbye to a controller that is still there);
  - replacing a child (`roost up --reload`): its process is asked to go
    (`replacing`: the stop signal of the caller's choice, KILL after the
    grace period) and its successor starts the moment it has gone, with no
    backoff and no failure counted; or, when the two may overlap (a router
    whose listening sockets are shared), the successor starts at once and
    the old process is left to finish on its own (`replaced`).

Transitions return new records (`dataclasses.replace`); nothing is mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from roost.proc.backoff import Backoff
from roost.proc.exits import FATAL, describe

State = Literal["pending", "starting", "up", "backoff", "stopping", "stopped", "failed"]
WITH_PROCESS: frozenset[State] = frozenset({"starting", "up", "stopping"})
# Output lines kept with an exit, and the longest error text kept.
TAIL_LINES = 20
ERROR_LIMIT = 4000


@dataclass(frozen=True)
class Policy:
    backoff: Backoff = field(default_factory=Backoff)
    # Longest wait for the readiness probe (None: the child is up once started).
    ready_timeout_s: float | None = None
    # Between the stop signal and SIGKILL.
    stop_grace_s: float = 10.0
    # Exit statuses after which the child is not restarted.
    fatal: frozenset[int] = FATAL


@dataclass(frozen=True)
class Child:
    name: str
    order: int  # when it was added: everything stops in reverse order
    policy: Policy = field(default_factory=Policy)
    probed: bool = False  # has a readiness probe
    state: State = "pending"
    wanted: bool = True  # False once removed: stop it, then forget it
    pid: int = 0
    started_at: float = 0.0
    up_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    next_start_at: float = 0.0
    # starting: give up waiting for readiness at; stopping: SIGKILL at.
    deadline: float = 0.0
    killed: bool = False
    # Why we stop it when the stop is a failure (a hung start), for the exit.
    fail_reason: str = ""
    # Stopping to be replaced: start again as soon as the process is gone.
    restart: bool = False
    last_error: str = ""
    status: int | None = None  # the last exit status
    ended_at: float = 0.0  # when it last failed

    @property
    def has_process(self) -> bool:
        return self.state in WITH_PROCESS


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Start:
    name: str


@dataclass(frozen=True)
class Terminate:
    name: str
    failure: str = ""  # set when the stop is a failure (no answer in time)


@dataclass(frozen=True)
class Kill:
    name: str


@dataclass(frozen=True)
class Forget:
    name: str


Action = Start | Terminate | Kill | Forget


# ------------------------------------------------------------------ transitions


def started(c: Child, pid: int, now: float) -> Child:
    """Its process is running; up at once unless it has a readiness probe."""
    timeout = c.policy.ready_timeout_s
    return replace(
        c,
        state="starting" if c.probed else "up",
        pid=pid,
        started_at=now,
        up_at=0.0 if c.probed else now,
        deadline=now + timeout if c.probed and timeout is not None else 0.0,
        killed=False,
        fail_reason="",
    )


def ready(c: Child, pid: int, now: float) -> Child:
    if c.state != "starting" or c.pid != pid:
        return c  # a stale answer about an earlier process, or one being stopped
    return replace(c, state="up", up_at=now, deadline=0.0)


def stopping(c: Child, now: float, failure: str = "") -> Child:
    return replace(c, state="stopping", deadline=now + c.policy.stop_grace_s, fail_reason=failure)


def killed(c: Child) -> Child:
    return replace(c, killed=True)


def replacing(c: Child, now: float) -> Child:
    """Stopping to be replaced: its exit is no failure, its successor starts at once."""
    return replace(stopping(c, now), restart=True)


def replaced(c: Child) -> Child:
    """Its process is left to end on its own: the successor starts now."""
    return replace(c, state="pending", pid=0, deadline=0.0, killed=False, fail_reason="")


def exited(c: Child, pid: int, status: int, tail: list[str], now: float) -> Child:
    """Its process `pid` exited with `status`."""
    if c.pid != pid or not c.has_process:
        return c
    if c.state == "stopping" and c.restart:
        return replace(c, state="pending", pid=0, deadline=0.0, status=status, restart=False)
    if c.state == "stopping" and not c.fail_reason:
        return replace(c, state="stopped", pid=0, deadline=0.0, status=status)
    return failed(c, c.fail_reason or describe(status), tail, now, status)


def start_failed(c: Child, error: str, now: float) -> Child:
    return failed(c, f"could not start: {error}", [], now, None)


def failed(c: Child, reason: str, tail: list[str], now: float, status: int | None) -> Child:
    error = format_error(reason, tail)
    if status is not None and status in c.policy.fatal:
        return replace(
            c, state="failed", pid=0, deadline=0.0, last_error=error, status=status, ended_at=now
        )
    ran = now - c.up_at if c.up_at else 0.0
    failures = c.policy.backoff.failures_after(c.failures, ran)
    return replace(
        c,
        state="backoff",
        pid=0,
        deadline=0.0,
        killed=False,
        fail_reason="",
        failures=failures,
        restarts=c.restarts + 1,
        next_start_at=now + c.policy.backoff.delay(failures),
        last_error=error,
        status=status,
        ended_at=now,
    )


def format_error(reason: str, tail: list[str]) -> str:
    lines = [line for line in tail if line.strip()][-TAIL_LINES:]
    text = "\n".join([reason, *lines])
    return text if len(text) <= ERROR_LIMIT else "…" + text[-ERROR_LIMIT:]


# ------------------------------------------------------------------ planning


def fatal(children: Mapping[str, Child]) -> Child | None:
    """The child whose failure ended supervision (the first, if several did)."""
    failed = [c for c in children.values() if c.state == "failed"]
    return min(failed, key=lambda c: c.ended_at) if failed else None


def plan(
    children: Mapping[str, Child], now: float, stopping_all: bool, in_order: bool = False
) -> list[Action]:
    actions: list[Action] = []
    if stopping_all or fatal(children) is not None:
        running = sorted((c for c in children.values() if c.has_process), key=lambda c: -c.order)
        for c in running[:1] if in_order else running:
            actions.extend(_stop(c, now))
        return actions
    for c in sorted(children.values(), key=lambda c: c.order):
        if not c.wanted:
            actions.extend(_stop(c, now) if c.has_process else [Forget(c.name)])
        elif c.state == "pending" or (c.state == "backoff" and now >= c.next_start_at):
            actions.append(Start(c.name))
        elif c.state == "starting" and c.deadline and now >= c.deadline:
            timeout = c.policy.ready_timeout_s or 0.0
            actions.append(Terminate(c.name, f"did not answer within {timeout:g}s"))
        elif c.state == "stopping":
            actions.extend(_stop(c, now))
    return actions


def _stop(c: Child, now: float) -> list[Action]:
    if c.state != "stopping":
        return [Terminate(c.name)]
    if now >= c.deadline and not c.killed:
        return [Kill(c.name)]
    return []


def next_deadline(children: Mapping[str, Child]) -> float | None:
    times = [c.next_start_at for c in children.values() if c.state == "backoff"]
    times += [
        c.deadline
        for c in children.values()
        if c.deadline and not (c.state == "stopping" and c.killed)
    ]
    return min(times) if times else None
