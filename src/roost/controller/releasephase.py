"""The release phase and the postdeploy script: an app's own commands, run
once per deploy on a runner, as `roost run` sessions and cron jobs run theirs.

Heroku's release phase, Dokku's predeploy: after the image is built and
held by a second host and before release vN exists (deployflow's
`release-phase` stage), the app's `scripts.dokku.predeploy` (app.json) and
then its Procfile `release:` command run in the new image, with the app's
config vars, its service credentials and bundle_config.py, sandboxed as the
app's own user. They are started by the RunStart a `run` session sends
(`runtarget.target_for` builds its assignment from the new image), so the
runner starts them as it starts those (roost.runner.rpcserver); the host
holding the image's copy is preferred. Their output is written to the
deploy's log as it comes, so the build stream and `git push` show it live.
A non-zero exit, a signal, a lost runner or ROOST_RELEASE_TIMEOUT_S running
out (the command is then stopped) fails the deploy with the command's last
lines: no release is made and the serving one never stops. A deploy
cancelled meanwhile (`roost deploys cancel`) has its command stopped too.
Config changes, restarts and rollbacks make no new image and run none of this.

Dokku's postdeploy runs once after vN went live: the lease holder ends the
rollout (a compare-and-set, so once) and hands the release here
(`after_live`). Its output goes to the same deploy log; a failure is a log
line and a `postdeploy-failed` platform event, never an undo of the release.

The image is read-only to these commands, as to instances (Dokku commits
predeploy's changes to its image; Roost's images are immutable and
content-addressed): what a command makes lasts in the app's services and
its data directory. A controller that dies while a command runs stops
polling its session, and the runner stops it once idle (roost.sessions); the
deploy stays at `release-phase`, as deploys are not resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from roost.appspec.model import AppSpec
from roost.controller import cron
from roost.controller.core import Controller
from roost.controller.deployflow import Stage, stage_of
from roost.controller.runtarget import NoTarget, target_for
from roost.controller.store import AppRow, NotFound, ReleaseRow
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    BuildResult,
    Error,
    ExecClose,
    ExecOutput,
    ExecPoll,
    LogLine,
    Ok,
    RunStart,
    RunTarget,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.controller")

# The last lines of a failed command that its deploy's error carries.
TAIL_LINES = 10
# A RunStart waits for the runner to fetch and unpack the image (from the
# copy it holds, usually); re-sent, it joins the start under way.
START_TIMEOUT_S = 60.0
POLL_TIMEOUT_S = 10.0
INDENT = "       "  # output under the deploy's "-----> " lines


@dataclass(frozen=True)
class Step:
    label: str  # what the log and errors call it
    command: str


def release_steps(spec: AppSpec) -> list[Step]:
    """The commands a deploy of `spec` runs before its release exists, in order."""
    steps = []
    if spec.predeploy_command:
        steps.append(Step("predeploy", spec.predeploy_command))
    if spec.release_command:
        steps.append(Step("release command", spec.release_command))
    return steps


@dataclass(frozen=True)
class Ended:
    """How a command's session ended, and its last lines of output."""

    status: int | None = None
    signal: str = ""
    timed_out: bool = False
    lost: str = ""  # the runner lost it, or could not start it: why
    tail: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == 0 and not (self.signal or self.timed_out or self.lost)


def how_it_ended(step: Step, ended: Ended, timeout_s: float) -> str:
    """One line: how `step` ended ("... exited with status 0" when it passed)."""
    what = f"{step.label} {step.command!r}"
    if ended.lost:
        return f"{what} did not run to its end: {ended.lost}"
    if ended.timed_out:
        return f"{what} was stopped: still running after {timeout_s:.0f}s"
    if ended.signal:
        return f"{what} was killed by signal {ended.signal}"
    return f"{what} exited with status {ended.status}"


def failure(step: Step, ended: Ended, timeout_s: float) -> str:
    """Why the deploy fails: how the command ended, then its last lines."""
    why = how_it_ended(step, ended, timeout_s)
    if not ended.tail:
        return why
    return why + "; its last lines:\n" + "\n".join(ended.tail)


async def run_session(
    client: RpcClient,
    start: RunStart,
    write: Callable[[list[str]], Awaitable[None]],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    wanted: Callable[[], Awaitable[str]] | None = None,
) -> Ended:
    """Start `start` on the runner `client` speaks to, hand its output lines
    to `write` as they come, and wait for its end (at most `timeout_s`).
    `wanted`, asked between polls, says why the command is no longer wanted
    (its deploy was cancelled), or "": then it is stopped."""
    try:
        reply = await client.call(start, timeout=START_TIMEOUT_S, tries=3)
    except (RpcTimeout, RemoteError) as exc:
        return Ended(lost=f"the runner did not start it: {exc}")
    if not isinstance(reply, Ok):
        why = reply.message if isinstance(reply, Error) else type(reply).__name__
        return Ended(lost=f"the runner did not start it: {why}")
    deadline = clock() + timeout_s
    seq, tails = 0, dict[str, bytes]()
    last: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        while True:
            if clock() > deadline:
                return Ended(timed_out=True, tail=tuple(last))
            unwanted = await wanted() if wanted is not None else ""
            if unwanted:
                return Ended(lost=unwanted, tail=tuple(last))
            try:
                out = await client.call(
                    ExecPoll(session=start.session, after=seq, wait_s=1.0),
                    timeout=POLL_TIMEOUT_S,
                    tries=3,
                )
            except (RpcTimeout, RemoteError) as exc:
                return Ended(lost=f"the runner stopped answering: {exc}", tail=tuple(last))
            if not isinstance(out, ExecOutput):
                why = out.message if isinstance(out, Error) else type(out).__name__
                return Ended(lost=f"the runner lost it: {why}", tail=tuple(last))
            cut, tails = cron.cut_lines(tails, [(ch.stream, ch.data) for ch in out.chunks])
            seq = max([seq, *(ch.seq for ch in out.chunks)])
            over = out.exit_status is not None or bool(out.exit_signal)
            if over:
                cut += cron.flush_tails(tails)
            lines = [line for _, line in cut]
            last.extend(lines)
            if lines:
                await write(lines)
            if over:
                return Ended(out.exit_status, out.exit_signal, tail=tuple(last))
    finally:
        # Ended or given up on: the runner stops whatever still runs.
        with contextlib.suppress(Exception):
            await client.call(ExecClose(session=start.session), timeout=5, tries=1)


class ReleasePhase:
    def __init__(
        self, controller: Controller, client_for: Callable[[Endpoint], RpcClient] | None
    ) -> None:
        self.c = controller
        self.client_for = client_for
        self._live: asyncio.Queue[tuple[str, ReleaseRow]] = asyncio.Queue()

    @property
    def timeout_s(self) -> float:
        return self.c.settings.release_timeout_s

    async def _say(self, app: str, build_id: str, lines: list[str]) -> None:
        now = time.time()
        await self.c.store.append_logs(
            [LogLine(app=app, ts=now, source="build", process=build_id, line=ln) for ln in lines]
        )

    async def _run(
        self,
        target: RunTarget,
        step: Step,
        app: str,
        build_id: str,
        wanted: Callable[[], Awaitable[str]] | None = None,
    ) -> Ended:
        if self.client_for is None:
            return Ended(lost="this controller cannot reach runners")
        await self._say(app, build_id, [f"-----> running {step.label}: {step.command}"])
        start = RunStart(
            session=f"release-{secrets.token_hex(6)}",
            assignment=target.assignment,
            command=step.command,
        )
        client = self.client_for(Endpoint(target.endpoint, target.public_key))
        try:

            async def write(lines: list[str]) -> None:
                await self._say(app, build_id, [INDENT + ln for ln in lines])

            return await run_session(client, start, write, self.timeout_s, wanted=wanted)
        finally:
            await client.close()

    async def before_release(self, app: AppRow, res: BuildResult) -> str | None:
        """Run the deploy's predeploy and release commands in its new image:
        None when it has none, "" when each exited 0, else why the deploy fails."""
        assert res.spec is not None
        steps = release_steps(res.spec)
        if not steps:
            return None
        store = self.c.store
        config = await store.config_vars(app.id)
        version = await store.next_release(app.id)
        holders = await store.copy_hosts(res.image_digest)

        async def wanted() -> str:
            # A deploy cancelled (roost deploys cancel) or moved on by another
            # writer meanwhile: its command is stopped, not waited for.
            status = (await store.build(res.build_id)).status
            return "" if stage_of(status) is Stage.RELEASE_PHASE else f"the deploy is {status}"

        for step in steps:
            try:
                target = await target_for(
                    self.c, app, version, res.image_digest, res.spec, config,
                    purpose="release", prefer=holders,
                )  # fmt: skip
            except NoTarget as exc:
                return f"{step.label} {step.command!r} not run: {exc}"
            ended = await self._run(target, step, app.name, res.build_id, wanted)
            if not ended.ok:
                return failure(step, ended, self.timeout_s)
            said = how_it_ended(step, ended, self.timeout_s)
            await self._say(app.name, res.build_id, [f"-----> {said}"])
        return ""

    # ------------------------------------------------------------ postdeploy

    def after_live(self, app_name: str, rel: ReleaseRow) -> None:
        """Called by the lease holder once a deploy's release went live."""
        if rel.spec.postdeploy_command:
            self._live.put_nowait((app_name, rel))

    async def loop(self) -> None:
        """Run each postdeploy handed over, each in a task of its own."""
        async with asyncio.TaskGroup() as tg:
            while True:
                app_name, rel = await self._live.get()
                tg.create_task(self._postdeploy_owned(app_name, rel))

    async def _postdeploy_owned(self, app_name: str, rel: ReleaseRow) -> None:
        try:
            await self.postdeploy(app_name, rel)
        except Exception:
            log.exception("%s v%d: postdeploy failed", app_name, rel.version)

    async def postdeploy(self, app_name: str, rel: ReleaseRow) -> bool:
        """Run release `rel`'s postdeploy script; whether it exited 0. A
        failure is said in the deploy's log and as a platform event."""
        assert rel.spec.postdeploy_command
        step = Step("postdeploy", rel.spec.postdeploy_command)
        build_id = rel.build_id or ""
        try:
            app = await self.c.store.app_by_id(rel.app_id)
        except NotFound:
            return False  # deleted meanwhile
        try:
            target = await target_for(
                self.c, app, rel.version, rel.image_digest, rel.spec, rel.config,
                purpose="postdeploy",
            )  # fmt: skip
            ended = await self._run(target, step, app_name, build_id)
        except NoTarget as exc:
            ended = Ended(lost=str(exc))
        said = how_it_ended(step, ended, self.timeout_s)
        if ended.ok:
            await self._say(app_name, build_id, [f"-----> {said}"])
            return True
        await self._say(app_name, build_id, [f"-----> {said}; v{rel.version} stays live"])
        await self.c.store.add_event(
            "postdeploy-failed", f"{app_name} v{rel.version}: {said}", rel.app_id
        )
        return False
