"""The runner's RPC server: `run APP CMD` and cron sessions, image copies,
deleted apps' homes. `RunnerRpc.handlers` is its table: every request the
runner answers.

A RunStart carries the release environment (an InstanceAssignment made by
the controller); the runner fetches and pins the image through its cache
(the same one its instances use), refreshes the app's data directory, writes
the run's bundle_config.py, and starts the command as an exec session
(`roost.sessions`). When the session ends the image is unpinned and the
run's files are removed.

A fenced RunStart (cron, from the scheduler-lease holder) is first judged by
`fencedruns.FencedRuns` (no token older than one seen, no session id twice)
and its session is kept for FENCED_KEEP_S without a poll instead of the
idle timeout: the controller that started it may have died, and the next
lease holder collects its output and exit status.

The same server holds this host's image copies (roost.runner.copies):
ImageCopy fills its store, ImageChunkRequest serves it to other hosts. And
AppRemoved archives a deleted app's home (roost.runner.archive), which a
RunStart claims for its app before the session starts.

The sessions are held by shims (`roost.runner.shimsession`), so a run or a
cron job outlives the runner: a new runner `adopt`s them before it answers
any request (their images pinned again, their cgroups found), and serves
them under their old ids: a gateway's or a controller's next poll carries
on, and a fenced RunStart repeated for an adopted session is answered Ok.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec

from roost.images.digest import ImageError
from roost.runner.archive import AppDirs
from roost.runner.confine import (
    ConfineError,
    TenantDefaults,
    give_tree,
    identity,
    image_binds,
    interpreter_mount,
    prepare_dirs,
    tenant_spec,
)
from roost.runner.copies import Copies
from roost.runner.datasync import START_PULL_TIMEOUT_S, DataSync
from roost.runner.fencedruns import FencedRuns
from roost.runner.fencing import Verdict
from roost.runner.firewall import RunnerFirewall
from roost.runner.imageprep import ImageProvider
from roost.runner.launch import Launch, LaunchError
from roost.runner.layout import Layout, link_data, materialize
from roost.runner.proxyfeed import ProxyFeed
from roost.runner.runcmd import manage_py, render_run
from roost.runner.s3local import LocalS3
from roost.runner.shimsession import SessionRecord, ShimHeld
from roost.sessions.server import ExecSessions, ExitHook, Spawn
from roost.tenant.cgroups import Limits
from roost.tenant.launch import Prepared, Tenancy, TenantError
from roost.wire.dispatch import Handlers, on, pong
from roost.wire.messages import (
    AppRemoved,
    AssignmentReady,
    Error,
    ImageChunkRequest,
    ImageCopy,
    InstanceAssignment,
    Msg,
    Ok,
    RunStart,
)
from roost.wire.rpc import RemoteError, RpcTimeout

log = logging.getLogger("roost.runner")

# A fenced (cron) session nobody polls is kept this long, running or ended:
# its controller may be gone and the next lease holder not yet there. The
# controller stops a job after an hour anyway (cronrunner.JOB_TIMEOUT_S).
FENCED_KEEP_S = 3600.0


class RunnerRpc:
    def __init__(
        self,
        layout: Layout,
        images: ImageProvider,
        sessions: ExecSessions,
        data: DataSync | None = None,
        copies: Copies | None = None,
        tenancy: Tenancy | None = None,
        tenant_defaults: TenantDefaults | None = None,
        fenced: FencedRuns | None = None,
    ) -> None:
        self.layout = layout
        self.fenced = fenced or FencedRuns(layout.root / "fenced-runs.json")
        # The fence of the assignment held (set by the daemon): a lease token too.
        self.assignment_fence: Callable[[], int] = lambda: 0
        # Set by the daemon: a lease holder says a new assignment waits.
        self.assignment_ready: Callable[[AssignmentReady], None] = lambda msg: None
        # None: commands run as the runner itself (tests of the relay alone).
        self.tenancy = tenancy or Tenancy("unconfined", enabled=False)
        self.tenant_defaults = tenant_defaults or TenantDefaults()
        self.images = images
        self.sessions = sessions
        self.data = data
        # This host's copy store: filled on ImageCopy, served to other hosts.
        self.copies = copies
        self._starting: dict[str, asyncio.Future[Msg]] = {}
        # Lists a `run` session's data proxy listeners before it starts
        # (the daemon sets it; None: nothing is fed, as in tests of the relay).
        self.proxy_feed: ProxyFeed | None = None
        # Puts this host's S3 gateway in a cluster bucket's endpoint (the
        # daemon sets it; s3local.py): before the firewall reads the addresses.
        self.local_s3 = LocalS3(None)

    def handlers(self, dirs: AppDirs, firewall: RunnerFirewall | None = None) -> Handlers:
        """The runner's table. A `run` session starts once its app's home is
        claimed (`dirs`) and its firewall allowances are in place."""
        fw = firewall or RunnerFirewall.off()
        start = self.proxy_feed.guard(self.start) if self.proxy_feed is not None else self.start
        return Handlers(
            "the runner",
            [
                on(RunStart, self.local_s3.guard(fw.guard(dirs.claiming(start)))),
                *self.sessions.entries(),
                on(ImageChunkRequest, self.serve_chunk),
                on(ImageCopy, self.copy),
                on(AssignmentReady, self._assignment_ready),
                on(AppRemoved, dirs.on_removed),
                pong("runner"),
            ],
        )

    async def _assignment_ready(self, msg: AssignmentReady) -> Msg:
        self.assignment_ready(msg)
        return Ok()

    async def serve_chunk(self, msg: ImageChunkRequest) -> Msg:
        if self.copies is None:
            return Error(message="this runner keeps no image copies")
        return await self.copies.serve(msg)

    async def copy(self, msg: ImageCopy) -> Msg:
        if self.copies is None:
            return Error(message="this runner keeps no image copies")
        try:
            await self.copies.hold(msg.digest)
        except Exception as exc:  # the controller tries another host
            return Error(message=f"could not copy image {msg.digest}: {exc}")
        return Ok(detail="copied")

    async def start(self, msg: RunStart) -> Msg:
        if self.sessions.has(msg.session):
            return Ok(detail=msg.session)
        pending = self._starting.get(msg.session)
        if pending is not None:  # a retry while the image is still being fetched
            return await asyncio.shield(pending)
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._starting[msg.session] = fut
        try:
            reply = await self._fenced(msg) if msg.fence else await self._start(msg)
        except Exception as exc:
            reply = Error(message=f"could not start the command: {exc}")
            log.exception("run %s failed to start", msg.session)
        finally:
            self._starting.pop(msg.session, None)
        fut.set_result(reply)
        return reply

    async def _fenced(self, msg: RunStart) -> Msg:
        verdict = self.fenced.judge(msg.fence, msg.session, self.assignment_fence())
        if verdict is not Verdict.ACCEPT:
            log.warning(
                "refused run %s fence=%d (%s; seen fence=%d)",
                msg.session,
                msg.fence,
                verdict.value,
                max(self.fenced.fence, self.assignment_fence()),
            )
            return Error(message=f"run {msg.session} refused: {verdict.value}")
        await self.fenced.record(msg.fence, msg.session)
        return await self._start(msg)

    async def _start(self, msg: RunStart) -> Msg:
        a = msg.assignment
        try:
            root = await self.images.ensure(a.app, a.image_digest)
        except (ImageError, OSError, RpcTimeout, RemoteError) as exc:
            return Error(message=f"could not fetch release {a.release} of {a.app}: {exc}")
        bundle_dir = self.layout.bundle_dir(a.app, a.instance_id)
        prepared: Prepared | None = None

        def cleanup(_status: int = 0) -> None:
            self._cleanup(a, prepared)(_status)

        try:
            data_dir = self.layout.data_directory(a.app)
            link_data(root, data_dir)
            if self.data is not None:
                await self.data.refresh(a.app, START_PULL_TIMEOUT_S)
            launch = render_run(
                a,
                command=msg.command,
                kind=msg.kind,
                image_root=root,
                data_directory=data_dir,
                bundle_config_dir=bundle_dir,
                term=msg.term if msg.pty else "",
                shell="/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh",
                has_manage_py=manage_py(root, a),
            )
            materialize(launch)
            prepared = self._confine(msg, launch, root, bundle_dir)
        except (LaunchError, ConfineError, TenantError, OSError, RuntimeError) as exc:
            cleanup()
            return Error(message=str(exc))
        reply = await self.sessions.start(
            msg.session,
            Spawn(
                argv=prepared.argv,
                env=launch.env,
                # A sandbox sets its own working directory (bwrap --chdir).
                cwd=Path("/") if prepared.sandboxed else Path(launch.cwd),
                pty=msg.pty,
                rows=msg.rows,
                cols=msg.cols,
                on_exit=cleanup,
                preexec=prepared.preexec,
                keep_s=FENCED_KEEP_S if msg.fence else None,
                setup=prepared.setup_data(),
                record={
                    "assignment": msgspec.to_builtins(a),
                    "unit": f"run-{msg.session}" if prepared.cgroup is not None else "",
                },
            ),
        )
        if isinstance(reply, Error):
            cleanup()
        else:
            log.info("%s: run %s: %s", a.app, msg.session, launch.command)
        return reply

    def _cleanup(self, a: InstanceAssignment, prepared: Prepared | None) -> ExitHook:
        """What ends a run: its cgroup, its image's pin, its files."""

        def cleanup(_status: int = 0) -> None:
            if prepared is not None:
                prepared.finish()  # whatever the command left running dies here
            self.images.release(a.image_digest)
            shutil.rmtree(self.layout.bundle_dir(a.app, a.instance_id), ignore_errors=True)

        return cleanup

    async def adopt(
        self, found: list[tuple[SessionRecord, ShimHeld]]
    ) -> dict[str, InstanceAssignment]:
        """Serve the runs a predecessor left running (before answering anyone);
        the assignment of each whose assignment reads, by session id."""
        await self.sessions.ready()
        adopted: dict[str, InstanceAssignment] = {}
        for rec, held in found:
            try:
                a = msgspec.convert(rec.extra.get("assignment"), InstanceAssignment)
            except msgspec.ValidationError as exc:
                log.warning(
                    "run %s: unreadable assignment (%s); no cleanup after it", rec.session, exc
                )
                self.sessions.adopt(rec.session, held, rec.pty, None, rec.keep_s)
                continue
            prepared: Prepared | None = None
            try:
                # Pinned again (ours were lost with the predecessor): not collected while it runs.
                await self.images.ensure(a.app, a.image_digest)
                unit = str(rec.extra.get("unit") or "")
                if unit:
                    who = identity(a) if a.app_id > 0 else None
                    prepared = self.tenancy.adopt(unit, who, Limits())
            except (ImageError, OSError, RpcTimeout, RemoteError, TenantError, ConfineError) as exc:
                log.warning("run %s: adopted without its image or cgroup: %s", rec.session, exc)
            self.sessions.adopt(rec.session, held, rec.pty, self._cleanup(a, prepared), rec.keep_s)
            adopted[rec.session] = a
            log.info("%s: run %s adopted (pid %d)", a.app, rec.session, held.pid)
        return adopted

    def _confine(self, msg: RunStart, launch: Launch, root: Path, bundle_dir: Path) -> Prepared:
        """The command's sandbox and cgroup: the app's identity, as its instances."""
        a = msg.assignment
        if not self.tenancy.enabled:
            return Prepared(argv=list(launch.argv), identity=None, cgroup=None)
        spec = tenant_spec(
            a,
            layout=self.layout,
            unit=f"run-{msg.session}",
            cwd=launch.cwd,
            image_paths=image_binds(root),
            defaults=self.tenant_defaults,
            image_mounts=tuple(filter(None, [interpreter_mount(root)])),
        )
        prepare_dirs(
            spec.identity, self.layout, a.app, bundle_dir=bundle_dir, data_quota_mb=a.data_quota_mb
        )
        give_tree(spec.identity, self.layout.data_directory(a.app))
        return self.tenancy.prepare(spec, launch.argv)
