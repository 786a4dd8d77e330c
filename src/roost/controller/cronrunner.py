"""Firing cron jobs exactly once across redundant controllers.

The adapter around `roost.controller.cron`, which tells the story. Every
tick the scheduler-lease holder reads the apps' cron jobs and the claims,
asks `cron.plan` what to do, and does it: claims newly due slots, adopts its
predecessor's open claims, and runs or follows each in a task of its own.

A run: pick a runner (`runtarget.run_target`), record started(runner,
session) on the claim, send RunStart carrying the lease's fencing token,
then poll the session to its end, writing its output to the app's log
(source "cron") and its exit status to the claim. Following an adopted
started claim sends the same RunStart again first (the runner answers Ok for
a session it has, and starts one it never received), then polls alike. A
task stops, leaving its claim to the next holder, once this controller no
longer holds the lease under the same token or a write finds the claim taken
over; it never closes the session then, so the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import msgspec

from roost.controller import cron
from roost.controller.core import LEASE, Controller
from roost.controller.cron import Claim, ClaimKey, Fence, Job, JobKey
from roost.controller.runtarget import NoTarget, run_target
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    Error,
    ExecClose,
    ExecOutput,
    ExecPoll,
    Ok,
    RunStart,
    RunTarget,
)
from roost.wire.rpc import RpcClient, RpcTimeout

log = logging.getLogger("roost.controller.cron")

TICK_MAX_S = 5.0
JOB_TIMEOUT_S = 3600.0
LINE_LIMIT = 2000
PRUNE_EVERY_S = 3600.0
KEEP_CLAIMS_S = 7 * 86400.0


class CronRunner:
    def __init__(self, controller: Controller, client_for: Callable[[Endpoint], RpcClient]) -> None:
        self.c = controller
        self.client_for = client_for
        self.slot_s = controller.settings.cron_slot_s
        # Several ticks a slot, so a slot starts soon after it begins.
        self.tick_s = min(TICK_MAX_S, self.slot_s / 6)
        self.since: float | None = None
        self.fence_seen = 0
        self.active: set[ClaimKey] = set()  # claims one of our tasks runs or follows
        self._pruned = 0.0
        # The jobs as of a desired-state count (apps, suspensions and current
        # releases all count as changes): reading 25,000 apps every tick cost
        # the lease holder a tenth of a core when nothing had changed.
        self._jobs: tuple[int, dict[JobKey, Job]] | None = None

    def fence(self) -> Fence:
        return Fence(LEASE, self.c.holder_id, self.c.fence)

    def holding(self, token: int) -> bool:
        return self.c.is_leader and self.c.fence == token

    async def jobs(self) -> dict[JobKey, Job]:
        version = await self.c.store.desired_version()
        if self._jobs is not None and self._jobs[0] == version:
            return self._jobs[1]
        out: dict[JobKey, Job] = {}
        recent = time.time() - (cron.MAX_CATCHUP + 1) * self.slot_s
        for app in await self.c.store.apps():
            if app.suspended or app.current_release is None:
                continue
            release = await self.c.release_row(app.id, app.current_release)
            jobs = [
                Job(app.name, j.command, j.schedule, app_id=app.id, overlap=j.overlap)
                for j in release.spec.cron
            ]
            if release.promoted_at is not None and release.promoted_at > recent:
                # Live for less than a catch-up window: a job new in it must
                # not run for the window's slots from before it existed.
                before = await self._keys_before(app.id, release.promoted_at)
                jobs = [
                    j if j.key in before else replace(j, not_before=release.promoted_at)
                    for j in jobs
                ]
            out.update(((app.id, j.key), j) for j in jobs)
        self._jobs = (version, out)
        return out

    async def _keys_before(self, app_id: int, promoted_at: float) -> set[str]:
        """The job keys of the release that was live before the one promoted at `promoted_at`."""
        live = [
            r
            for r in await self.c.store.releases(app_id)
            if r.promoted_at is not None and r.promoted_at < promoted_at
        ]
        if not live:
            return set()
        prev = max(live, key=lambda r: r.promoted_at or 0.0)
        return {Job("", j.command, j.schedule).key for j in prev.spec.cron}

    async def loop(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                await asyncio.sleep(self.tick_s)
                if not self.c.is_leader:
                    # `since` is kept: a holder whose renewal was only slow
                    # (is_leader lapses until it lands) keeps its token, and
                    # looking a catch-up window back again would run slots
                    # of jobs added since, from before they existed. A new
                    # token resets it in `tick`.
                    continue
                try:
                    await self.tick(tg)
                except Exception:
                    log.exception("cron tick failed")

    async def tick(self, tg: asyncio.TaskGroup) -> None:
        fence, store = self.fence(), self.c.store
        now = time.time()
        if self.since is None or self.fence_seen != fence.token:
            # A new holder looks one catch-up window back (see cron's docstring).
            self.since, self.fence_seen = now - cron.MAX_CATCHUP * self.slot_s, fence.token
        now_slot = cron.slot_of(now, self.slot_s)
        jobs = await self.jobs()
        claims = await store.cron_claims(now_slot - cron.MAX_CATCHUP + 1)
        p = cron.plan(
            jobs=jobs,
            claims=claims,
            due_now=cron.due(jobs.values(), self.since, now, slot_s=self.slot_s),
            now_slot=now_slot,
            fence=fence.token,
            active=self.active,
            alive={s.heartbeat.host_id for s in self.c.soft.alive_hosts()},
            settled=self.c.settled(time.monotonic()),
        )
        for new in p.new:
            won = await store.claim_cron(fence, new)
            if won and new.state == cron.CLAIMED:
                mine = Claim(new.job.app_id, new.job.key, new.slot, fence.token, cron.CLAIMED)
                self._spawn(tg, mine, self._run(mine, new.job))
        for old in p.run:
            adopted = await store.adopt_cron(fence, old, cron.CLAIMED)
            job = jobs.get(old.job_key)
            if adopted is not None and job is not None:
                if old.fence != fence.token:
                    log.info(
                        "cron: taking over slot %d, claimed under token %d", old.slot, old.fence
                    )
                self._spawn(tg, adopted, self._run(adopted, job))
        for old in p.follow:
            adopted = await store.adopt_cron(fence, old, cron.STARTED)
            if adopted is not None:
                self._spawn(tg, adopted, self._follow(adopted, jobs.get(old.job_key)))
        for old, status in p.finish:
            adopted = await store.adopt_cron(fence, old, old.state)
            if adopted is not None:
                why = "its runner is gone" if status == cron.LOST else "never started in time"
                line = f"cron: the run of slot {old.slot} is {status}: {why}"
                await store.finish_cron(fence.token, adopted.key, status, [("stderr", line)])
        self.since = now
        if now - self._pruned > PRUNE_EVERY_S:
            keep = int(KEEP_CLAIMS_S / self.slot_s)
            await store.prune_cron(now_slot - keep)
            self._pruned = now

    def _spawn(self, tg: asyncio.TaskGroup, claim: Claim, work: Coroutine[Any, Any, None]) -> None:
        self.active.add(claim.key)

        async def owned() -> None:
            try:
                await work
            except Exception:
                # Left open: the next tick adopts it again (RunStart is idempotent).
                log.exception("cron run of slot %d failed", claim.slot)
            finally:
                self.active.discard(claim.key)

        tg.create_task(owned())

    # ------------------------------------------------------------ one run

    async def _target(self, claim: Claim) -> RunTarget:
        """A runner, with the app's current release environment and this run's slot."""
        app = await self.c.store.app_by_id(claim.app_id)
        target = await run_target(self.c, app, purpose="cron")
        a = target.assignment
        # Unix seconds of the scheduled minute: a key a job can make itself idempotent by.
        env = {**a.env, "ROOST_CRON_TIME": str(claim.slot * 60)}
        return msgspec.structs.replace(target, assignment=msgspec.structs.replace(a, env=env))

    async def _finish(
        self, claim: Claim, status: str, lines: list[tuple[str, str]], code: int | None = None
    ) -> bool:
        return await self.c.store.finish_cron(claim.fence, claim.key, status, lines, code)

    async def _run(self, claim: Claim, job: Job) -> None:
        try:
            target = await self._target(claim)
        except NoTarget as exc:
            line = f"cron: {job.command!r} not run: {exc}"
            await self._finish(claim, cron.FAILED, [("stderr", line)])
            return
        session = f"cron-{secrets.token_hex(6)}"
        line = f"cron: running {job.command!r} on {target.host_id}"
        started = await self.c.store.start_cron(claim.fence, claim, target.host_id, session, line)
        if not started or not self.holding(claim.fence):
            return  # taken over; or the next holder sends the RunStart
        claim = replace(claim, state=cron.STARTED, runner=target.host_id, session=session)
        start = RunStart(
            session=session, assignment=target.assignment, command=job.command, fence=claim.fence
        )
        ep = Endpoint(target.endpoint, target.public_key)
        await self._drive(claim, ep, start, job.command, adopted=False)

    async def _follow(self, claim: Claim, job: Job | None) -> None:
        alive = (s.heartbeat for s in self.c.soft.alive_hosts())
        host = next((hb for hb in alive if hb.host_id == claim.runner), None)
        if host is None or not host.rpc_endpoint:
            return  # the next tick decides (lost, once this holder knows the hosts)
        command = job.command if job is not None else f"job {claim.job}"
        start: RunStart | None = None
        if job is not None:
            with contextlib.suppress(NoTarget):
                target = await self._target(claim)
                start = RunStart(
                    session=claim.session,
                    assignment=target.assignment,
                    command=job.command,
                    fence=claim.fence,
                )
        log.info("cron: following %r of slot %d on %s", command, claim.slot, claim.runner)
        ep = Endpoint(host.rpc_endpoint, host.rpc_key)
        await self._drive(claim, ep, start, command, adopted=True)

    async def _drive(
        self, claim: Claim, ep: Endpoint, start: RunStart | None, command: str, adopted: bool
    ) -> None:
        client = self.client_for(ep)
        try:
            if start is not None:
                reply = await client.call(start, timeout=30)
                if not isinstance(reply, Ok):
                    why = reply.message if isinstance(reply, Error) else type(reply).__name__
                    status = cron.LOST if adopted else cron.FAILED
                    await self._finish(
                        claim, status, [("stderr", f"cron: {command!r} {status}: {why}")]
                    )
                    return
            await self._collect(client, claim, command)
        except RpcTimeout as exc:
            # The claim stays started: a later tick follows it again.
            log.warning(
                "cron: runner %s did not answer about %s: %s", claim.runner, claim.session, exc
            )
        finally:
            await client.close()

    async def _collect(self, client: RpcClient, claim: Claim, command: str) -> None:
        """Poll the session to its end; returns early when the claim is no longer ours."""
        seq, tail, count = claim.out_seq, dict(claim.out_tail), claim.out_lines
        deadline = (claim.started_at or time.time()) + JOB_TIMEOUT_S
        store = self.c.store
        while self.holding(claim.fence):
            if time.time() > deadline:
                with contextlib.suppress(Exception):
                    await client.call(ExecClose(session=claim.session), timeout=5, tries=1)
                line = f"cron: {command!r} stopped: still running after {JOB_TIMEOUT_S:.0f}s"
                await self._finish(claim, cron.FAILED, [("stderr", line)])
                return
            out = await client.call(
                ExecPoll(session=claim.session, after=seq, wait_s=1.0), timeout=10
            )
            if isinstance(out, Error):
                await self._finish(
                    claim, cron.LOST, [("stderr", f"cron: {command!r} lost: {out.message}")]
                )
                return
            if not isinstance(out, ExecOutput):
                raise RuntimeError(f"runner answered {type(out).__name__}")
            lines, tail = cron.cut_lines(tail, [(ch.stream, ch.data) for ch in out.chunks])
            new_seq = max([seq, *(ch.seq for ch in out.chunks)])
            kept = lines[: max(0, LINE_LIMIT - count)]
            count += len(lines)
            if out.exit_status is not None or out.exit_signal:
                kept += cron.flush_tails(tail)[: max(0, LINE_LIMIT - count)]
                code = out.exit_status
                how = f"signal {out.exit_signal}" if out.exit_signal else f"status {code}"
                kept.append(("stdout", f"cron: {command!r} exited with {how}"))
                status = cron.SUCCEEDED if code == 0 else cron.FAILED
                if await self._finish(claim, status, kept, code):
                    with contextlib.suppress(Exception):
                        await client.call(ExecClose(session=claim.session), timeout=5, tries=1)
                return
            if new_seq != seq:
                moved = await store.cron_output(claim.fence, claim.key, new_seq, tail, count, kept)
                if not moved:
                    return  # taken over: the new owner carries on from the row
                seq = new_seq
