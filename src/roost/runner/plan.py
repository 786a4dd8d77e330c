"""What the supervisor should do next: pure functions over data and a clock value.

Theory of operation. The runner holds one `Record` per instance it runs or
still has a process for, and one `ImageStatus` per image digest those records
use. The desired set (the latest accepted assignment) is declarative; identity
is `instance_id`. Each tick the supervisor:

  1. applies the events that arrived (process exits, readiness, image
     results, a new desired set) through the transition functions below;
  2. `admit`s a pending record for every desired instance it has none for;
  3. asks `plan(desired, records, images, now)` for actions and performs them.

`plan` never looks at the world, only at the records, so every restart,
backoff, timeout and stop decision is tested here with a fake clock. Rules:

  - a record that is not desired, or whose assignment changed, is stopped
    (SIGTERM to its process group), SIGKILLed when its grace runs out
    (`stop_grace`: the app's ROOST_GRACEFUL_TIMEOUT, else the runner's), and
    forgotten once it has no process; a changed instance is then admitted
    again with its new assignment;
  - a desired record without a process starts as soon as its image is ready
    and its backoff (if any) has elapsed; a missing image is fetched, a failed
    fetch is retried with the same capped exponential backoff;
  - a starting non-web instance is up after `settle_s` alive; a starting web
    instance is up when its health check passed (event, `health.py`), and is
    failed after `startup_limit` without passing;
  - an exit that was not asked for is a crash: `failures` grows the backoff
    (reset after the instance stayed up `backoff_reset_s`), state "crashed"
    when it never came up in that run, "backoff" when it did.

Transitions return new records (`dataclasses.replace`); nothing is mutated.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from roost.appspec.runtime import graceful_timeout
from roost.proc.backoff import Backoff
from roost.runner import health
from roost.runner.launch import is_web
from roost.runner.model import (
    Action,
    Fetch,
    Forget,
    ImageStatus,
    Kill,
    MarkUp,
    Policy,
    Record,
    Start,
    Starts,
    Stop,
)
from roost.wire.messages import InstanceAssignment, InstanceState

ERROR_LIMIT = 4000
# gunicorn's arbiter KILLs the workers still busy when its graceful timeout
# ends, then exits: the runner's KILL waits for that beyond the timeout.
ARBITER_MARGIN_S = 2.0
# The longest a web instance told to stop waits for its accept queue to
# empty before TERM (runner/backlog.py), and how often it looks.
QUIESCE_MAX_S = 10.0
QUIESCE_POLL_S = 0.02


def backoff(policy: Policy) -> Backoff:
    """The toolkit's backoff with this policy's timings (roost.proc.backoff)."""
    return Backoff(policy.backoff_base_s, policy.backoff_max_s, 0.0, policy.backoff_reset_s)


def backoff_delay(failures: int, policy: Policy) -> float:
    """Delay before the restart that follows the `failures`-th consecutive failure."""
    return backoff(policy).delay(failures)


def admit(desired: Iterable[InstanceAssignment], records: Mapping[str, Record]) -> list[Record]:
    """New pending records for desired instances that have none.

    Each gets the lowest free index among its app's records of the same
    process type, so "web.1" keeps its name while "web.2" is replaced.
    """
    used: dict[tuple[str, str], set[int]] = {}
    for rec in records.values():
        key = (rec.assignment.app, rec.assignment.process_type)
        used.setdefault(key, set()).add(_index(rec.process_name))
    new: list[Record] = []
    seen: set[str] = set()
    for inst in desired:
        if inst.instance_id in records or inst.instance_id in seen:
            continue
        seen.add(inst.instance_id)
        taken = used.setdefault((inst.app, inst.process_type), set())
        n = 1
        while n in taken:
            n += 1
        taken.add(n)
        new.append(Record(assignment=inst, process_name=f"{inst.process_type}.{n}"))
    return new


def _index(process_name: str) -> int:
    try:
        return int(process_name.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return 0


def together(actions: list[Action]) -> list[Action]:
    """`actions` with each run of two or more Starts as one Starts."""
    out: list[Action] = []
    run: list[Start] = []
    for action in [*actions, None]:
        if isinstance(action, Start):
            run.append(action)
            continue
        out.extend([Starts(tuple(run))] if len(run) > 1 else run)
        run = []
        if action is not None:
            out.append(action)
    return out


def plan(
    desired: Mapping[str, InstanceAssignment],
    records: Mapping[str, Record],
    images: Mapping[str, ImageStatus],
    now: float,
    policy: Policy,
) -> list[Action]:
    actions: list[Action] = []
    fetching: set[str] = set()
    for iid, rec in records.items():
        want = desired.get(iid)
        if want is None or want != rec.assignment:
            reason = "no longer assigned" if want is None else "assignment changed"
            actions.extend(_retire(rec, now, reason))
            continue
        if rec.state == "stopping":
            if not rec.killed and now >= rec.kill_at:
                actions.append(Kill(iid))
        elif rec.state == "starting":
            if not is_web(rec.assignment):
                if now - rec.started_at >= policy.settle_s:
                    actions.append(MarkUp(iid))
            elif now - rec.started_at >= (limit := startup_limit(rec.assignment, policy)):
                failure = f"did not answer HTTP on port {rec.port} within {limit:g}s of starting"
                actions.append(Stop(iid, reason="startup timeout", failure=failure))
        elif rec.state in ("pending", "crashed", "backoff", "stopped"):
            if rec.state in ("crashed", "backoff") and now < rec.next_start_at:
                continue
            digest = rec.assignment.image_digest
            img = images.get(digest)
            if img is not None and img.state == "ready":
                actions.append(Start(iid))
            elif digest not in fetching and (
                img is None or (img.state == "failed" and now >= img.retry_at)
            ):
                fetching.add(digest)
                actions.append(Fetch(digest, rec.assignment.app))
    return actions


def startup_limit(a: InstanceAssignment, policy: Policy) -> float:
    """How long a web instance has to pass its health check: the runner's
    startup timeout, or longer when the app declared a check that needs more."""
    check = health.check_for(a)
    if not check.declared:
        return policy.startup_timeout_s
    return max(policy.startup_timeout_s, health.budget(check))


def _retire(rec: Record, now: float, reason: str) -> list[Action]:
    iid = rec.instance_id
    if rec.state in ("starting", "up"):
        return [Stop(iid, reason=reason)]
    if rec.state == "stopping":
        return [Kill(iid)] if not rec.killed and now >= rec.kill_at else []
    return [Forget(iid)]


def next_deadline(
    records: Mapping[str, Record], images: Mapping[str, ImageStatus], policy: Policy
) -> float | None:
    """The earliest clock value at which `plan` may decide something new."""
    times: list[float] = []
    for rec in records.values():
        if rec.state in ("crashed", "backoff"):
            times.append(rec.next_start_at)
        elif rec.state == "stopping" and not rec.killed:
            times.append(rec.kill_at)
        elif rec.state == "starting":
            wait = (
                startup_limit(rec.assignment, policy) if is_web(rec.assignment) else policy.settle_s
            )
            times.append(rec.started_at + wait)
    times += [img.retry_at for img in images.values() if img.state == "failed"]
    return min(times) if times else None


# ---------------------------------------------------------------- transitions


def started(
    rec: Record, *, pid: int, now: float, wall: float, command: str, port: int, unix_socket: str
) -> Record:
    return replace(
        rec,
        state="starting",
        pid=pid,
        port=port,
        unix_socket=unix_socket,
        command=command,
        started_at=now,
        started_wall=wall,
        up_at=0.0,
        next_start_at=0.0,
        kill_at=0.0,
        killed=False,
        fail_reason="",
        runs=rec.runs + 1,
        restarts=rec.restarts + (1 if rec.runs else 0),
        unhealthy=False,
    )


def adopted(
    a: InstanceAssignment,
    *,
    process_name: str,
    state: InstanceState,
    pid: int,
    port: int,
    unix_socket: str,
    command: str,
    started_wall: float,
    runs: int,
    restarts: int,
    now: float,
    policy: Policy,
) -> Record:
    """A running instance a previous runner left (as its shim's record says):
    in the state it was in, its clocks started again at `now` (a starting one
    gets its whole start-up time again; a stopping one its whole grace)."""
    rec = Record(
        assignment=a,
        process_name=process_name,
        state="starting",
        pid=pid,
        port=port,
        unix_socket=unix_socket,
        command=command,
        started_at=now,
        started_wall=started_wall,
        runs=max(runs, 1),
        restarts=restarts,
    )
    if state == "up":
        return replace(rec, state="up", up_at=now)
    if state == "stopping":
        return stopping(rec, now, policy)
    return rec


def marked_up(rec: Record, now: float) -> Record:
    if rec.state != "starting":
        return rec
    return replace(rec, state="up", up_at=now)


def on_ready(rec: Record, pid: int, now: float) -> Record:
    """The probe got an HTTP answer from process `pid` (ignored if stale)."""
    if rec.pid != pid:
        return rec
    return marked_up(rec, now)


def stop_grace(a: InstanceAssignment, policy: Policy) -> float:
    """Seconds from TERM to KILL for an instance: its app's graceful timeout
    (gunicorn's --graceful-timeout for a WSGI process, which gets a margin to
    end its own workers), else the runner's."""
    seconds = float(graceful_timeout(a.env, policy.stop_grace_s))
    proc = a.spec.processes.get(a.process_type)
    return seconds + ARBITER_MARGIN_S if proc is not None and proc.kind == "wsgi" else seconds


def quiesce_budget(rec: Record, failure: str, policy: Policy) -> float:
    """Seconds a stopping instance may wait, before TERM, for the requests
    queued on its listeners to be accepted: a web instance that served (was
    up, so routers may have handed it requests), not one the runner fails;
    at most its graceful timeout and QUIESCE_MAX_S."""
    if failure or rec.state != "up" or not is_web(rec.assignment):
        return 0.0
    if not (rec.port or rec.unix_socket):
        return 0.0
    return min(QUIESCE_MAX_S, float(graceful_timeout(rec.assignment.env, policy.stop_grace_s)))


def stopping(
    rec: Record, now: float, policy: Policy, failure: str = "", quiesce_s: float = 0.0
) -> Record:
    kill_at = now + quiesce_s + stop_grace(rec.assignment, policy)
    return replace(rec, state="stopping", kill_at=kill_at, fail_reason=failure)


def killed(rec: Record) -> Record:
    return replace(rec, killed=True)


def on_exit(
    rec: Record,
    *,
    pid: int,
    returncode: int | None,
    output_tail: list[str],
    now: float,
    policy: Policy,
    error: str = "",
) -> Record:
    """The record's process `pid` has exited (or `error`: it never started)."""
    if pid and rec.pid != pid:
        return rec  # a stale report about an earlier process
    if rec.state == "stopping" and not rec.fail_reason:
        return replace(rec, state="stopped", pid=0, killed=False)
    # One that ran fine for a while starts the count again.
    failures = backoff(policy).failures_after(rec.failures, now - rec.up_at if rec.up_at else 0.0)
    reason = rec.fail_reason or error or describe_exit(returncode)
    return replace(
        rec,
        state="backoff" if rec.up_at else "crashed",
        pid=0,
        killed=False,
        fail_reason="",
        failures=failures,
        next_start_at=now + backoff_delay(failures, policy),
        last_error=format_error(reason, output_tail),
    )


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "could not be started"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def format_error(reason: str, tail: list[str]) -> str:
    text = reason if not tail else reason + "\n" + "\n".join(tail)
    return text if len(text) <= ERROR_LIMIT else "…" + text[-ERROR_LIMIT:]


def image_fetching(status: ImageStatus | None) -> ImageStatus:
    failures = status.failures if status else 0
    return ImageStatus(state="fetching", failures=failures)


def image_ready(path: Path) -> ImageStatus:
    return ImageStatus(state="ready", path=path)


def image_failed(status: ImageStatus | None, error: str, now: float, policy: Policy) -> ImageStatus:
    failures = (status.failures if status else 0) + 1
    delay = min(policy.image_retry_max_s, backoff_delay(failures, policy))
    return ImageStatus(state="failed", failures=failures, retry_at=now + delay, error=error)
