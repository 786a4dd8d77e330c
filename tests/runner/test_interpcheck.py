"""A runner checks the interpreter an image needs before it starts an instance of it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from roost.runner.interpcheck import Needed, Passed, check_image, interpreter_path, judge, needed
from roost.runner.layout import Layout
from roost.runner.model import Policy, Record
from roost.runner.supervisor import Supervisor
from roost.tenant.launch import Prepared
from roost.wire.messages import LogLine
from tests.runner.helpers import (
    DIGEST_A,
    FakeImages,
    assignment,
    command_spec,
    eventually,
    make_image_root,
    make_tenancy,
)

PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
HERE = ".".join(map(str, sys.version_info[:3]))
FAST = Policy(backoff_base_s=0.05, backoff_max_s=0.2, settle_s=0.3, stop_grace_s=1.0)


def test_the_manifest_names_the_interpreter() -> None:
    text = json.dumps({"python": {"path": "/usr/bin/python3.11", "version": "3.11.2"}})
    assert needed(text) == Needed("/usr/bin/python3.11", "3.11.2", "cpython")
    for old in ("{}", "[]", "{not json", json.dumps({"python": {"path": "/x"}})):
        assert needed(old) is None  # older images, or nothing usable: not checked


def test_a_carried_interpreter_is_looked_for_in_its_layer() -> None:
    n = Needed("/root/.pyenv/versions/3.12.1/bin/python3.12", "3.12.1")
    mount = (Path("/data/layers/py"), Path("/root/.pyenv/versions/3.12.1"))
    assert interpreter_path(n, Path("/img"), mount) == (
        Path(n.path), Path("/data/layers/py/bin/python3.12")
    )  # fmt: skip
    assert interpreter_path(Needed("python/bin/python3", "3.12.1"), Path("/img")) == (
        Path("/img/python/bin/python3"), Path("/img/python/bin/python3")
    )  # fmt: skip


def test_the_verdicts() -> None:
    n, p = Needed("/usr/bin/python3.11", "3.11.2"), Path("/usr/bin/python3.11")
    assert judge(n, p, 0, "cpython 3.11.9\n") is None  # same ABI: a patch release apart
    assert judge(n, p, None, "") == (
        "this runner lacks the interpreter the image needs: cpython 3.11.2 at /usr/bin/python3.11"
    )
    assert judge(n, p, 0, "cpython 3.12.1\n") == (
        "the image needs cpython 3.11.2 at /usr/bin/python3.11, "
        "but that path here is cpython 3.12.1"
    )
    assert judge(n, p, 0, "pypy 3.11.2\n") is not None
    assert judge(n, p, 127, "error while loading shared libraries: libpython3.11.so.1.0\n") == (
        "the interpreter the image needs, cpython 3.11.2 at /usr/bin/python3.11, does not run "
        "here (exit 127: error while loading shared libraries: libpython3.11.so.1.0)"
    )


def fake_interpreter(path: Path, answers: str) -> None:
    """An executable at `path` that answers the probe with `answers`, put
    there as a package manager would (a new file renamed over the old)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(f"#!/bin/sh\necho {answers}\n")
    tmp.chmod(0o755)
    os.replace(tmp, path)


async def test_a_pass_is_remembered_until_the_interpreter_file_changes(tmp_path: Path) -> None:
    """Each code-only deploy is a new image naming the same interpreter: it is
    asked once per app, not once per image; replaced, it is asked again, and
    a failure is never remembered."""
    python = tmp_path / "python3.11"
    fake_interpreter(python, "cpython 3.11.2")
    images = []
    for name in ("v1", "v2"):
        root = tmp_path / name
        root.mkdir()
        (root / "roost-image.json").write_text(
            json.dumps({"python": {"path": str(python), "version": "3.11.2"}})
        )
        images.append(root)
    asked: list[list[str]] = []

    def prepare(argv: list[str]) -> Prepared | None:
        asked.append(argv)
        return None  # unconfined

    passed: Passed = set()
    assert await check_image(images[0], prepare, passed=passed, who="7:a") is None
    assert await check_image(images[1], prepare, passed=passed, who="7:a") is None
    assert len(asked) == 1  # the second image's check was the first's pass
    assert await check_image(images[1], prepare, passed=passed, who="8:b") is None
    assert len(asked) == 2  # another app, another user: asked as that one
    fake_interpreter(python, "cpython 3.12.1")
    for _ in range(2):
        problem = await check_image(images[1], prepare, passed=passed, who="7:a")
        assert problem is not None and "that path here is cpython 3.12.1" in problem
    assert len(asked) == 4  # replaced: asked again; failed: asked each time
    python.unlink()
    problem = await check_image(images[0], prepare, passed=passed, who="7:a")
    assert problem is not None and "lacks the interpreter" in problem


async def run_with(tmp_path: Path, python: dict[str, str]) -> tuple[Supervisor, list[LogLine]]:
    """A worker of an image whose manifest names `python`, on a real sandboxed
    supervisor; returns once it is up or has failed to start (caller stops it)."""
    layout = Layout(tmp_path / "data")
    layout.create()
    root = make_image_root(tmp_path / "image", {})
    (root / "roost-image.json").write_text(json.dumps({"python": python}))
    logs: list[LogLine] = []
    sup = Supervisor(
        layout=layout,
        images=FakeImages({DIGEST_A: root}),
        policy=FAST,
        emit=logs.append,
        tenancy=make_tenancy(tmp_path),
    )
    spec = command_spec("sleep 300", web=False, name="worker")
    sup.set_desired([assignment("w1", process_type="worker", spec=spec)])
    return sup, logs


async def wait_and_stop(sup: Supervisor, pred: Callable[[Record], bool], what: str) -> Record:
    """The worker's record once `pred` holds for it; the supervisor stopped after."""
    task = asyncio.create_task(sup.run())
    seen: list[Record] = []

    def check() -> bool:
        rec = sup.records.get("w1")
        if rec is not None and pred(rec):
            seen.append(rec)
        return bool(seen)

    try:
        await eventually(check, what=what)
    finally:
        sup.shutdown()
        await asyncio.wait_for(task, 30)
        sup.tenancy.close()
    return seen[0]


async def test_an_image_whose_interpreter_is_here_starts(tmp_path: Path) -> None:
    """The probe runs as the app, in its sandbox, and passes: the worker runs."""
    sup, _ = await run_with(tmp_path, {"path": PYTHON, "version": HERE})
    await wait_and_stop(sup, lambda r: r.state == "up", "worker up")


async def test_an_image_whose_interpreter_is_missing_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    missing = "/opt/roost-test-nowhere/bin/python3.11"
    sup, logs = await run_with(tmp_path, {"path": missing, "version": "3.11.2"})
    want = f"this runner lacks the interpreter the image needs: cpython 3.11.2 at {missing}"
    rec = await wait_and_stop(sup, lambda r: want in r.last_error, "refused")
    assert rec.pid == 0 and rec.runs == 0  # never started, never crashed
    assert any(x.line.startswith("cannot run image ") and want in x.line for x in logs)


async def test_another_version_at_the_same_path_is_refused(tmp_path: Path) -> None:
    sup, _ = await run_with(tmp_path, {"path": PYTHON, "version": "3.99.0"})
    want = f"the image needs cpython 3.99.0 at {PYTHON}, but that path here is cpython {HERE}"
    rec = await wait_and_stop(sup, lambda r: r.last_error.endswith(want), "refused")
    assert rec.runs == 0
