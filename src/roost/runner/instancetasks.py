"""The tasks that run beside each instance: its output and exit, its health.

The supervisor starts them in its loop's TaskGroup (`Supervisor._start`, and
for an adopted instance `_watch_adopted`) and they only *post events* to it
(see supervisor.py): `watch` an `Exited` once the instance's shim says it
ended, `probe` a `Ready` when the start's check passes and an `Unhealthy`
when a check fails. Neither touches a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from roost.runner.health import Answer, Check, check_for
from roost.runner.model import Event, Exited, Policy, Ready, Record, Unhealthy
from roost.runner.probe import keep_checking, knock, run_check
from roost.runner.shimclient import Child
from roost.wire.messages import InstanceAssignment, LogLine


async def watch(
    rec: Record,
    child: Child,
    *,
    emit: Callable[[LogLine], None],
    wall: Callable[[], float],
    post: Callable[[Event], None],
) -> None:
    """Relay the instance's output as its app's log lines until it exits."""
    app, name, iid = rec.assignment.app, rec.process_name, rec.instance_id

    def sink(stream: str, line: str) -> None:
        emit(
            LogLine(
                app=app,
                ts=wall(),
                source="app",
                process=name,
                stream=stream,
                line=line,
                instance_id=iid,
            )
        )

    rc, tail = await child.run(sink)
    error = child.error
    if child.oom_killed and child.prepared is not None:
        limit = child.prepared.limits.memory_mb
        error = f"ran out of memory (limit {limit} MB): killed by the kernel"
    post(Exited(iid, child.pid, rc, tail, error))


async def probe(
    a: InstanceAssignment,
    pid: int,
    host: str,
    port: int,
    *,
    policy: Policy,
    post: Callable[[Event], None],
    up: bool = False,
) -> None:
    """The start's check (not for an adopted instance already `up`);
    then, for a check the app declared, the same check for as long as
    the instance runs (the task ends with it): a release that goes bad
    after it went live fails it, and is rolled back within the window as
    one that crash-loops (controller/aftercare)."""
    check = check_for(a)

    def try_once(c: Check) -> Awaitable[Answer]:
        return knock(host, port, c)

    failure = "" if up else await run_check(check, try_once, asyncio.sleep)
    if not failure:
        if not up:
            post(Ready(a.instance_id, pid))
        if not check.declared:
            return
        failure = await keep_checking(check, try_once, asyncio.sleep, policy.health_every_s)
    post(Unhealthy(a.instance_id, pid, failure))
