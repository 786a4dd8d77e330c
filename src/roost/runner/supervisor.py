"""The supervisor: one loop that converges instances to the desired set.

Theory of operation (gunicorn's arbiter, in asyncio: the loop is the process
toolkit's, `roost.proc.arbiter`). Nothing but this loop changes the records.
Everything else only *posts events*: the heartbeat posts a new desired set,
each process's watcher posts its exit, each readiness probe posts that its
instance answered (`roost.runner.instancetasks`), image fetches post their
result, the signal handler posts Shutdown. The loop wakes on an event or
at the next deadline the planner cares about, applies the events through
the pure transitions of `roost.runner.plan`, admits records for new desired
instances, asks `plan` what to do, and does it. So every decision (restart,
backoff, startup timeout, stop, kill) is made in one place, from data, with
one clock.

Every instance runs under a shim of its own (`roost.runner.shim`), started
once its launch is written and confined (`roost.runner.instanceprep`), so it
outlives this runner; a watcher task reads its output from the shim until it
exits. Every task lives in the loop's TaskGroup. Shutdown empties the
desired set, so the ordinary rules stop every instance (TERM, grace, KILL)
and the loop returns once no record has a process left. Handover (SIGUSR2)
returns at once and leaves every instance to its shim; the next runner
`adopt`s them before its loop starts, with the state their records say, and
reconciles them only once it holds an assignment (before that, an empty
desired set would stop them all).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

from roost.proc.arbiter import Arbiter
from roost.runner import backlog, imageprep, instanceprep, instancetasks, interpcheck
from roost.runner import plan as P
from roost.runner.confine import ConfineError, TenantDefaults, identity
from roost.runner.imageprep import ImageProvider
from roost.runner.launch import LaunchError, is_web
from roost.runner.layout import Layout, PortAllocator
from roost.runner.model import (
    Action,
    Adopted,
    DesiredChanged,
    Event,
    Exited,
    Fetch,
    Forget,
    Handover,
    ImageFailed,
    ImageReady,
    ImageStatus,
    Kill,
    MarkUp,
    Policy,
    Ready,
    Record,
    Shutdown,
    Start,
    Starts,
    Stop,
    Unhealthy,
)
from roost.runner.shimclient import Child, ShimError, ShimRecord
from roost.tenant.cgroups import Limits
from roost.tenant.identity import Identity
from roost.tenant.launch import Tenancy, TenantError
from roost.wire.messages import InstanceAssignment, LogLine

log = logging.getLogger("roost.runner")


class Supervisor(Arbiter[Event, Action]):
    def __init__(
        self,
        *,
        layout: Layout,
        images: ImageProvider,
        policy: Policy,
        emit: Callable[[LogLine], None],
        probe_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tenancy: Tenancy | None = None,
        tenant_defaults: TenantDefaults | None = None,
        ports: PortAllocator | None = None,
    ) -> None:
        self.layout = layout
        # None: instances run as the runner itself (unit tests of the loop;
        # the daemon always passes its Tenancy).
        self.tenancy = tenancy or Tenancy("unconfined", enabled=False)
        self.tenant_defaults = tenant_defaults or TenantDefaults()
        self.policy = policy
        self.records: dict[str, Record] = {}
        self.images: dict[str, ImageStatus] = {}
        # Set whenever an instance changes state (the heartbeat reports early).
        self.changed = asyncio.Event()
        self._provider = images
        self._emit = emit
        self._probe_host = probe_host
        super().__init__(clock)
        self._wall = wall
        self._desired: list[InstanceAssignment] = []
        self._desired_by_id: dict[str, InstanceAssignment] = {}
        self._children: dict[str, Child] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._interpreters_passed: interpcheck.Passed = set()
        self._ports = ports or PortAllocator()
        self._stopping = False
        self._handing_over = False
        # No assignment yet: adopted instances wait for one before anything
        # decides about them.
        self._assigned = False

    # ------------------------------------------------------------ inputs

    def set_desired(self, instances: Iterable[InstanceAssignment]) -> None:
        self.post(DesiredChanged(list(instances)))

    def shutdown(self) -> None:
        self.post(Shutdown())

    def handover(self) -> None:
        """Return promptly, leaving every instance running (to its shim)."""
        self.post(Handover())

    def adopt(self, found: Iterable[tuple[ShimRecord, Child]]) -> None:
        """Take over instances a previous runner left running (before `run`)."""
        now = self._clock()
        ids: list[str] = []
        for shim, child in found:
            a = shim.assignment
            iid = a.instance_id
            if iid in self.records:
                continue
            try:
                child.prepared = self.tenancy.adopt(
                    shim.unit,
                    identity(a) if a.app_id > 0 else None,
                    Limits(memory_mb=shim.memory_mb),
                )
            except (TenantError, ConfineError) as exc:
                # Still adopted (its shim ends it as usual); only its cgroup
                # is left to the next sweep.
                log.warning("%s %s: cannot find its cgroup: %s", a.app, iid, exc)
            rec = P.adopted(
                a,
                process_name=shim.process_name,
                state=shim.state,
                pid=child.pid,
                port=shim.port,
                unix_socket=self.layout.socket_path(iid) if is_web(a) else "",
                command=shim.command,
                started_wall=shim.started_wall,
                runs=shim.runs,
                restarts=shim.restarts,
                now=now,
                policy=self.policy,
            )
            if rec.port:
                self._ports.in_use.add(rec.port)
            self.records[iid] = rec
            self._children[iid] = child
            ids.append(iid)
            log.info("%s %s: adopted (pid %d, %s)", a.app, iid, child.pid, rec.state)
        if ids:
            self.changed.set()
            self.post(Adopted(tuple(ids)))

    # ------------------------------------------------------------ the loop (roost.proc.arbiter)

    async def run(self) -> None:
        """Supervise until `shutdown()` has stopped every instance."""
        await super().run()
        self._release_unused()

    def finished(self) -> bool:
        return self._handing_over or (self._stopping and not self.records)

    def plan(self, now: float) -> list[Action]:
        if self._handing_over or not (self._assigned or self._stopping):
            return []
        if not self._stopping:
            for rec in P.admit(self._desired, self.records):
                self.records[rec.instance_id] = rec
                self.changed.set()
        return P.together(P.plan(self._desired_by_id, self.records, self.images, now, self.policy))

    def next_deadline(self) -> float | None:
        return P.next_deadline(self.records, self.images, self.policy)

    def settle(self) -> None:
        self._release_unused()

    def closing(self) -> None:
        # On a hand-over the watchers let go of their shims: instances run on.
        for tasks in (self._fetches, self._watchers, self._probes):
            for task in tasks.values():
                task.cancel()

    # ------------------------------------------------------------ events

    def apply(self, event: Event, now: float) -> None:
        if isinstance(event, DesiredChanged):
            if self._stopping:
                # An assignment that arrives while the runner stops (heartbeats
                # run until the instances are down) must not bring them back.
                return
            self._desired = list(event.instances)
            self._desired_by_id = {i.instance_id: i for i in event.instances}
            self._assigned = True
        elif isinstance(event, Handover):
            self._handing_over = True
        elif isinstance(event, Adopted):
            for iid in event.instance_ids:
                self._watch_adopted(iid)
        elif isinstance(event, Shutdown):
            self._stopping = True
            self._desired, self._desired_by_id = [], {}
        elif isinstance(event, Exited):
            self._on_exited(event, now)
        elif isinstance(event, Ready):
            rec = self.records.get(event.instance_id)
            if rec is not None and rec.state == "starting":
                self._set(P.on_ready(rec, event.pid, now))
                if self.records[rec.instance_id].state == "up":
                    self._platform(
                        rec,
                        f"{rec.process_name} is up (passed its health check on port {rec.port})",
                    )
        elif isinstance(event, Unhealthy):
            rec = self.records.get(event.instance_id)
            if rec is not None and rec.state in ("starting", "up") and rec.pid == event.pid:
                # Stopped as a failure: the exit is then a crash whose error is
                # the check's answer, and the rollout judges it as one.
                self._stop(rec, now, Stop(rec.instance_id, "health check", event.failure))
                self._set(replace(self.records[rec.instance_id], unhealthy=True))
        elif isinstance(event, ImageReady):
            self._fetches.pop(event.digest, None)
            old = self.images.get(event.digest)
            if old is not None and old.state == "ready":
                self._provider.release(event.digest)  # already held: keep one pin
            self.images[event.digest] = P.image_ready(event.path)
        elif isinstance(event, ImageFailed):
            self._fetches.pop(event.digest, None)
            self.images[event.digest] = P.image_failed(
                self.images.get(event.digest), event.error, now, self.policy
            )
            for rec in list(self.records.values()):
                if rec.assignment.image_digest == event.digest and not rec.has_process:
                    self._set(replace(rec, last_error=f"image {event.digest}: {event.error}"))
                    what = "cannot run" if event.unusable else "could not fetch"
                    self._platform(rec, f"{what} image {event.digest}: {event.error}")

    def _on_exited(self, event: Exited, now: float) -> None:
        child = self._children.get(event.instance_id)
        if child is not None and child.pid == event.pid:
            del self._children[event.instance_id]
            self._watchers.pop(event.instance_id, None)
        probe = self._probes.pop(event.instance_id, None)
        if probe is not None:
            probe.cancel()
        rec = self.records.get(event.instance_id)
        if rec is None:
            return
        new = P.on_exit(
            rec,
            pid=event.pid,
            returncode=event.returncode,
            output_tail=event.output_tail,
            now=now,
            policy=self.policy,
            error=event.error,
        )
        self._set(new)
        if new.state == "stopped":
            self._platform(new, f"{new.process_name} stopped")
        elif new.state in ("crashed", "backoff"):
            first = new.last_error.splitlines()[0] if new.last_error else "exited"
            delay = max(0.0, new.next_start_at - now)
            self._platform(
                new, f"{new.process_name} {first}; restarting in {round(delay, 2):g}s", "stderr"
            )

    def _set(self, rec: Record) -> None:
        old = self.records.get(rec.instance_id)
        self.records[rec.instance_id] = rec
        if old is None or old.state != rec.state or old.pid != rec.pid:
            self.changed.set()
            child = self._children.get(rec.instance_id)
            if child is not None and child.pid == rec.pid and rec.has_process:
                child.save(rec.state)  # what a successor adopts it as

    # ------------------------------------------------------------ actions

    async def do(self, action: Action, now: float) -> None:
        if isinstance(action, Fetch):
            self.images[action.digest] = P.image_fetching(self.images.get(action.digest))
            self._fetches[action.digest] = self.tasks.create_task(
                self._fetch(action.app, action.digest)
            )
            return
        if isinstance(action, Starts):  # their shims start at once (model.Starts)
            async with asyncio.TaskGroup() as tg:
                for one in action.starts:
                    if (each := self.records.get(one.instance_id)) is not None:
                        tg.create_task(self._start(each, now))
            return
        rec = self.records.get(action.instance_id)
        if rec is None:
            return
        if isinstance(action, Start):
            await self._start(rec, now)
        elif isinstance(action, MarkUp):
            self._set(P.marked_up(rec, now))
            self._platform(rec, f"{rec.process_name} is up")
        elif isinstance(action, Stop):
            self._stop(rec, now, action)
        elif isinstance(action, Kill):
            child = self._children.get(rec.instance_id)
            self._set(P.killed(rec))
            grace = P.stop_grace(rec.assignment, self.policy)
            self._platform(rec, f"{rec.process_name} did not stop within {grace:g}s: killing it")
            if child is not None:
                child.signal_group(signal.SIGKILL)
        elif isinstance(action, Forget):
            del self.records[rec.instance_id]
            if rec.port:
                self._ports.release(rec.port)
            if rec.unix_socket:
                self.layout.release_socket(rec.unix_socket)
            shutil.rmtree(
                self.layout.bundle_dir(rec.assignment.app, rec.instance_id), ignore_errors=True
            )
            self.changed.set()

    def _stop(self, rec: Record, now: float, action: Stop) -> None:
        child = self._children.get(rec.instance_id)
        quiesce = P.quiesce_budget(rec, action.failure, self.policy)
        self._set(P.stopping(rec, now, self.policy, action.failure, quiesce))
        why = action.failure or action.reason
        self._platform(rec, f"stopping {rec.process_name} ({why})")
        if child is None:
            return
        if quiesce > 0:
            stopping = self.records[rec.instance_id]
            self.tasks.create_task(self._term_when_quiet(stopping, child, now + quiesce))
        else:
            child.signal_group(signal.SIGTERM)

    async def _term_when_quiet(self, rec: Record, child: Child, deadline: float) -> None:
        """TERM once no connection waits in the instance's accept queues (or
        at `deadline`): its workers stop accepting at TERM, and what still
        waited then would be reset unanswered (runner/backlog.py)."""
        sockets, ports = [rec.unix_socket], [rec.port]
        while self._clock() < deadline:
            try:
                if backlog.queued(sockets, ports) == 0:
                    break
            except OSError as e:
                log.warning(
                    "cannot read %s's accept queue (%s): stopping it now", rec.process_name, e
                )
                break
            await asyncio.sleep(P.QUIESCE_POLL_S)
        now = self.records.get(rec.instance_id)
        if now is not None and now.state == "stopping" and now.pid == rec.pid:
            child.signal_group(signal.SIGTERM)

    async def _start(self, rec: Record, now: float) -> None:
        a = rec.assignment
        img = self.images[a.image_digest]
        assert img.path is not None
        port = rec.port
        if not port or rec.state == "crashed":
            # A run that never came up may have failed because someone took
            # its port meanwhile: take a fresh one. (One that served keeps its
            # port, so the routers' backend stays valid across restarts.)
            if port:
                self._ports.release(port)
            port = self._ports.allocate()
        sock = self.layout.socket_path(a.instance_id) if is_web(a) else ""
        begun = P.started(
            rec, pid=0, now=now, wall=self._wall(), command="", port=port, unix_socket=sock
        )
        try:
            launch, prepared = instanceprep.prepare(
                rec,
                image_root=img.path,
                port=port,
                unix_sock=sock,
                bind_host=self._probe_host,
                stop_grace_s=self.policy.stop_grace_s,
                layout=self.layout,
                tenancy=self.tenancy,
                defaults=self.tenant_defaults,
            )
        except (LaunchError, ConfineError, TenantError, OSError, RuntimeError) as exc:
            self._fail_start(begun, now, str(exc))
            return
        begun = replace(begun, command=launch.command)
        record = ShimRecord(
            assignment=a,
            process_name=rec.process_name,
            port=port,
            command=launch.command,
            unit=a.instance_id if prepared.cgroup is not None else "",
            memory_mb=prepared.limits.memory_mb,
            started_wall=begun.started_wall,
            runs=begun.runs,
            restarts=begun.restarts,
        )
        try:
            child = await Child.start(
                self.layout.shim_dir(a.instance_id), record, launch.env, launch.cwd, prepared
            )
        except (OSError, ShimError, TimeoutError, ValueError, subprocess.SubprocessError) as exc:
            prepared.finish()
            self._fail_start(begun, now, f"could not start: {exc}")
            return
        self._children[a.instance_id] = child
        self._set(replace(begun, pid=child.pid))
        verb = "restarting" if rec.runs else "starting"
        self._platform(rec, f"{verb} {rec.process_name} (release {a.release}): {launch.command}")
        self._watchers[a.instance_id] = self.tasks.create_task(self._watch(rec, child))
        if launch.web:
            probe = instancetasks.probe(
                a, child.pid, launch.probe_host, port, policy=self.policy, post=self.post
            )
            self._probes[a.instance_id] = self.tasks.create_task(probe)

    def _watch_adopted(self, iid: str) -> None:
        rec, child = self.records.get(iid), self._children.get(iid)
        if rec is None or child is None:
            return
        self._watchers[iid] = self.tasks.create_task(self._watch(rec, child))
        a = rec.assignment
        if is_web(a) and rec.state in ("starting", "up"):
            probe = instancetasks.probe(
                a, child.pid, self._probe_host, rec.port,
                policy=self.policy, post=self.post, up=rec.state == "up",
            )  # fmt: skip
            self._probes[iid] = self.tasks.create_task(probe)
        digest = a.image_digest
        if digest not in self.images and not self._stopping:
            # Pinned like any image in use, and ready for a restart.
            self.images[digest] = P.image_fetching(None)
            self._fetches[digest] = self.tasks.create_task(self._fetch(a.app, digest))

    def data_owner(self, app: str) -> Identity | None:
        """Whom `app`'s data pulls are applied as (its own user), when it runs
        here confined; None otherwise. Any thread: it only reads the records."""
        if not self.tenancy.enabled:
            return None
        for rec in list(self.records.values()):
            if rec.assignment.app == app and rec.assignment.app_id > 0:
                return identity(rec.assignment)
        return None

    def _fail_start(self, rec: Record, now: float, error: str) -> None:
        failed = P.on_exit(
            rec, pid=0, returncode=None, output_tail=[], now=now, policy=self.policy, error=error
        )
        self._set(failed)
        self._platform(failed, f"{failed.process_name} {error}", "stderr")

    # ------------------------------------------------------------ tasks

    def _watch(self, rec: Record, child: Child) -> Coroutine[None, None, None]:
        """The task a record's process has while it runs (instancetasks.watch)."""
        return instancetasks.watch(rec, child, emit=self._emit, wall=self._wall, post=self.post)

    async def _fetch(self, app: str, digest: str) -> None:
        data = self.layout.data_directory(app)
        check = partial(self._check_interpreter, digest)
        self.post(await imageprep.prepare(self._provider, app, digest, data, check))

    async def _check_interpreter(self, digest: str, root: Path) -> str | None:
        """The image's interpreter is here (roost.runner.interpcheck), asked as its app."""
        users = [r.assignment for r in self.records.values() if r.assignment.image_digest == digest]
        return await interpcheck.check_as_app(
            root, digest, users, self.tenancy, self.tenant_defaults, self._interpreters_passed
        )

    # ------------------------------------------------------------ helpers

    def _release_unused(self) -> None:
        """Forget (and unpin) images no record uses any more."""
        used = {rec.assignment.image_digest for rec in self.records.values()}
        for digest, status in list(self.images.items()):
            if digest not in used and status.state != "fetching":
                del self.images[digest]
                if status.state == "ready":
                    self._provider.release(digest)

    def _platform(self, rec: Record, line: str, stream: str = "stdout") -> None:
        log.info("%s %s: %s", rec.assignment.app, rec.instance_id, line)
        self._emit(
            LogLine(
                app=rec.assignment.app,
                ts=self._wall(),
                source="platform",
                process=rec.process_name,
                stream=stream,
                line=line,
                instance_id=rec.instance_id,
            )
        )
