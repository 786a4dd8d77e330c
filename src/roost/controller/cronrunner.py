"""Firing cron jobs once across redundant controllers.

Only the scheduler-lease holder looks for due jobs (`cron.due`); each due
(app, job, minute) is claimed in the state database with a unique key before
it runs, so a lease handover (or two controllers that briefly both think they
lead) cannot run a slot twice. A job runs as an exec session on a runner in
the app's current release environment (`runtarget.run_target`); its output
and exit status land in the app's log stream as source "cron".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from roost.controller import cron
from roost.controller.core import Controller
from roost.controller.runtarget import NoTarget, run_target
from roost.wire.cluster import Endpoint
from roost.wire.messages import ExecClose, ExecOutput, ExecPoll, LogLine, RunStart
from roost.wire.rpc import RpcClient, RpcTimeout

log = logging.getLogger("roost.controller.cron")

TICK_S = 5.0
# A new lease holder looks this far back: a slot its predecessor was about to
# claim still runs (claims stop a slot running twice).
LOOKBACK_S = 120.0
JOB_TIMEOUT_S = 3600.0
LINE_LIMIT = 2000


class CronRunner:
    def __init__(self, controller: Controller, client_for: Callable[[Endpoint], RpcClient]) -> None:
        self.c = controller
        self.client_for = client_for
        self.since: float | None = None
        self.fence_seen = 0

    def jobs(self) -> list[tuple[int, cron.Job]]:
        out: list[tuple[int, cron.Job]] = []
        for app in self.c.store.apps():
            if app.suspended or app.current_release is None:
                continue
            spec = self.c.release_row(app.id, app.current_release).spec
            out.extend((app.id, cron.Job(app.name, j.command, j.schedule)) for j in spec.cron)
        return out

    async def loop(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                await asyncio.sleep(TICK_S)
                if not self.c.is_leader:
                    self.since = None
                    continue
                now = time.time()
                if self.since is None or self.fence_seen != self.c.fence:
                    self.since, self.fence_seen = now - LOOKBACK_S, self.c.fence
                try:
                    jobs = await asyncio.to_thread(self.jobs)
                    by_app = {job: app_id for app_id, job in jobs}
                    for d in cron.due([j for _, j in jobs], self.since, now):
                        app_id = by_app[d.job]
                        if await asyncio.to_thread(
                            self.c.store.claim_cron, app_id, d.job.key, d.slot, self.c.holder_id
                        ):
                            tg.create_task(self.run(app_id, d.job, d.slot))
                    self.since = now
                    await asyncio.to_thread(
                        self.c.store.prune_cron, cron.slot_of(now) - 60 * 24 * 7
                    )
                except Exception:
                    log.exception("cron tick failed")

    def _log(self, app: str, line: str, stream: str = "stdout") -> None:
        self.c.store.append_logs(
            [
                LogLine(
                    app=app, ts=time.time(), source="cron", process="cron", stream=stream, line=line
                )
            ]
        )

    async def run(self, app_id: int, job: cron.Job, slot: int) -> None:
        status = "failed"
        try:
            app = self.c.store.app_by_id(app_id)
            target = run_target(self.c, app, purpose="cron")
        except NoTarget as exc:
            self._log(job.app, f"cron: {job.command!r} not run: {exc}", "stderr")
            await asyncio.to_thread(self.c.store.finish_cron, app_id, job.key, slot, status)
            return
        self._log(job.app, f"cron: running {job.command!r} on {target.host_id}")
        client = self.client_for(Endpoint(target.endpoint, target.public_key))
        session = f"cron-{secrets.token_hex(6)}"
        try:
            await client.call(
                RunStart(session=session, assignment=target.assignment, command=job.command),
                timeout=30,
            )
            code = await self._follow(client, session, job.app)
            status = "succeeded" if code == 0 else "failed"
            self._log(job.app, f"cron: {job.command!r} exited with status {code}")
        except (RpcTimeout, Exception) as exc:  # the run is over either way; say why
            self._log(job.app, f"cron: {job.command!r} failed: {exc}", "stderr")
        finally:
            with contextlib.suppress(Exception):
                await client.call(ExecClose(session=session), timeout=5, tries=1)
            await client.close()
            await asyncio.to_thread(self.c.store.finish_cron, app_id, job.key, slot, status)

    async def _follow(self, client: RpcClient, session: str, app: str) -> int | None:
        after, partial, lines = 0, {"stdout": b"", "stderr": b""}, 0
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            out = await client.call(ExecPoll(session=session, after=after, wait_s=1.0), timeout=10)
            if not isinstance(out, ExecOutput):
                raise RuntimeError(f"runner answered {type(out).__name__}")
            for chunk in out.chunks:
                after = max(after, chunk.seq)
                data = partial[chunk.stream] + chunk.data
                *complete, partial[chunk.stream] = data.split(b"\n")
                for raw in complete:
                    if lines < LINE_LIMIT:
                        self._log(app, raw.decode("utf-8", "replace"), chunk.stream)
                    lines += 1
            if out.exit_status is not None or out.exit_signal:
                for stream, rest in partial.items():
                    if rest:
                        self._log(app, rest.decode("utf-8", "replace"), stream)
                return out.exit_status
        raise TimeoutError(f"still running after {JOB_TIMEOUT_S:.0f}s; stopped")
