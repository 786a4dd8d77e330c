"""Builders shared by the runner tests (assignments, specs, image roots, waits,
the runner daemon as a process and the fake controller it talks to)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import psutil

from roost.appspec.model import AppSpec, ProcessSpec
from roost.images.serve import handle_image_request
from roost.images.store import ImageStore
from roost.tenant.launch import Prepared, Tenancy
from roost.wire.messages import (
    Assignment,
    Error,
    Heartbeat,
    HeartbeatReply,
    ImageChunkRequest,
    InstanceAssignment,
    LogBatch,
    LogLine,
    Msg,
    Ok,
)

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def command_spec(command: str, *, web: bool = True, name: str = "web") -> AppSpec:
    return AppSpec(
        processes={name: ProcessSpec(name=name, kind="command", command=command, web=web)}
    )


def assignment(
    iid: str,
    *,
    app: str = "demo",
    release: int = 1,
    digest: str = DIGEST_A,
    process_type: str = "web",
    spec: AppSpec | None = None,
    env: dict[str, str] | None = None,
    app_id: int = 1,
    memory_mb: int = 0,
) -> InstanceAssignment:
    return InstanceAssignment(
        instance_id=iid,
        app=app,
        release=release,
        image_digest=digest,
        process_type=process_type,
        spec=spec or command_spec("true"),
        env=env or {},
        app_id=app_id,
        memory_mb=memory_mb,
    )


def make_image_root(root: Path, files: dict[str, str], checkout: str = "app") -> Path:
    """An unpacked image: `<checkout>/` with `files`, `venv` = the test interpreter's env."""
    code = root / checkout
    code.mkdir(parents=True)
    for name, text in files.items():
        (code / name).write_text(text)
    (root / "venv").symlink_to(Path(sys.prefix))
    (root / "roost-image.json").write_text("{}")
    return root


def make_tenancy(tmp_path: Path, keep: Collection[str] = ()) -> Tenancy:
    """The real thing (per-app users, bubblewrap, cgroups), owned by this test alone
    (`keep`: cgroups of adopted instances, spared by its start-up sweep)."""
    owner = f"test-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]}"
    return Tenancy.for_daemon(owner, keep=keep)


class FakeImages:
    """An ImageProvider over prepared directories, counting pins."""

    def __init__(self, roots: dict[str, Path], fail: dict[str, int] | None = None) -> None:
        self.roots = roots
        self.fail = dict(fail or {})  # digest -> failures to report before succeeding
        self.ensured: list[str] = []
        self.pins: dict[str, int] = {}

    async def ensure(self, app: str, digest: str) -> Path:
        self.ensured.append(digest)
        await asyncio.sleep(0)
        if self.fail.get(digest, 0) > 0:
            self.fail[digest] -= 1
            raise OSError(f"image store unreachable for {digest}")
        self.pins[digest] = self.pins.get(digest, 0) + 1
        return self.roots[digest]

    def release(self, digest: str) -> None:
        self.pins[digest] -= 1
        assert self.pins[digest] >= 0


async def eventually(
    pred: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# The runner daemon as a real process (test_daemon, test_dataproxy_restart):
# `runner_argv(DATA)` runs it on DATA as host H1. The host id names its
# cgroups (roost-runner-HOST): unique to this run, so that another run on
# the machine, whose runner's start-up sweep kills what its own owner left,
# never kills these instances.
H1 = f"h1-{os.getpid()}"
RUNNER = """
import logging, sys
from pathlib import Path
from roost.runner.daemon import run
from roost.settings import Settings
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
run(Path(sys.argv[1]), Settings.from_env(), host_id=sys.argv[2])
"""


def runner_argv(data: Path) -> list[str]:
    """The runner daemon's command line: RUNNER on `data` as host H1."""
    return [sys.executable, "-c", RUNNER, str(data), H1]


@contextlib.contextmanager
def short_data_dir() -> Iterator[Path]:
    """A data directory with a short path: unix socket paths live under it."""
    with tempfile.TemporaryDirectory(prefix="rr-") as d:
        yield Path(d)


class FakeController:
    """The controller and image store a runner daemon talks to: answers
    heartbeats with `assignment`, keeps log lines, serves image chunks from
    `store`; `down` makes it silent."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.heartbeats: list[Heartbeat] = []
        self.lines: list[LogLine] = []
        self.assignment: Assignment | None = None
        self.down = False

    async def handle(self, msg: Msg) -> Msg:
        if isinstance(msg, ImageChunkRequest):
            return handle_image_request(self.store, msg)
        if isinstance(msg, Heartbeat):
            self.heartbeats.append(msg)
            if self.down:
                await asyncio.sleep(3600)  # a dead controller: no reply
            return HeartbeatReply(assignment=self.assignment)
        if isinstance(msg, LogBatch):
            if self.down:
                await asyncio.sleep(3600)
            self.lines.extend(msg.lines)
            return Ok()
        return Error(message=f"unexpected {type(msg).__name__}")

    def last(self) -> Heartbeat:
        return self.heartbeats[-1]

    def states(self) -> dict[str, str]:
        return {i.instance_id: i.state for i in self.last().instances} if self.heartbeats else {}

    def pids(self) -> dict[str, int]:
        return {i.instance_id: i.pid for i in self.last().instances}


def unconfined(argv: list[str]) -> Prepared:
    """`argv` as the runner would start it, without a sandbox or a cgroup."""
    return Prepared(argv=argv, identity=None, cgroup=None)
