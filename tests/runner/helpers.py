"""Builders shared by the runner tests (assignments, specs, image roots, waits)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

import psutil

from roost.appspec.model import AppSpec, ProcessSpec
from roost.tenant.launch import Tenancy
from roost.wire.messages import InstanceAssignment

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
