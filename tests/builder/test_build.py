"""Real builds: uv from PyPI (cached for the session), as the build user."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from roost.builder.errors import BuildError
from roost.builder.pipeline import Build
from roost.builder.workspace import Workspace
from roost.images.archive import unpack

from .conftest import EXAMPLES, tar_dir

HELLO = EXAMPLES / "hello"


async def build(
    ws: Workspace, build_id: str, archive: bytes, **kw: str
) -> tuple[object, list[str]]:
    lines: list[str] = []
    out = await Build(ws, build_id, "hello", archive, lines.append, **kw).run()
    return out, lines


def leftovers(ws: Workspace) -> list[str]:
    found = [p.name for p in ws.builds.iterdir()]
    found += [p.name for p in ws.layers.iterdir() if p.name.startswith(".")]
    found += [p.name for p in ws.store.tmp_dir.iterdir()]
    return found


async def test_hello_builds_an_image_and_second_build_installs_nothing(ws: Workspace) -> None:
    first, lines1 = await build(ws, "h1", tar_dir(HELLO))
    assert first.image_digest.startswith("sha256:") and ws.store.verify(first.image_digest)
    assert "flask==" in first.lock and "gunicorn==" in first.lock  # gunicorn added
    assert any(ln.startswith("-----> install (") for ln in lines1)
    # Code-only change: same requirements, so the lock and the layer are reused.
    second, lines2 = await build(
        ws, "h2", tar_dir(HELLO, {"extra.py": "X = 1\n"}), previous_lock_text=first.lock
    )
    assert second.installed is False
    assert second.layer_key == first.layer_key and second.lock == first.lock
    assert any("nothing installed" in ln for ln in lines2)
    assert not any("resolving requirements" in ln for ln in lines2)
    assert second.image_digest != first.image_digest
    # The image layout the runner relies on.
    with tempfile.TemporaryDirectory() as d:
        unpack(ws.store.path(second.image_digest), Path(d))
        root = Path(d)
        manifest = json.loads((root / "roost-image.json").read_text())
        assert manifest["app"] == "hello" and manifest["checkout_name"] == "app"
        assert (root / "app" / "app.py").is_file() and (root / "app" / "extra.py").is_file()
        assert (root / "venv" / "bin" / "gunicorn").exists()
        assert (root / "venv" / "pyvenv.cfg").read_text().count("relocatable = true") == 1
    assert leftovers(ws) == []


async def test_bad_requirement_line_fails_with_reason(ws: Workspace) -> None:
    arch = tar_dir(HELLO, {"requirements.txt": "flask>=3.0\nthis is not a requirement ==\n"})
    lines: list[str] = []
    with pytest.raises(BuildError, match="cannot resolve the requirements"):
        await Build(ws, "bad-req", "hello", arch, lines.append).run()
    assert any("lock failed" in ln for ln in lines)
    assert leftovers(ws) == []


async def test_missing_requirements_file_is_named(ws: Workspace, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(HELLO, app)
    (app / "epio.ini").write_text("[wsgi]\nrequirements = deps/missing.txt\nentrypoint = app:app\n")
    with pytest.raises(BuildError, match=r"deps/missing\.txt"):
        await build(ws, "missing-req", tar_dir(app))
    assert leftovers(ws) == []


async def test_entrypoint_that_does_not_import_fails_the_build(ws: Workspace) -> None:
    arch = tar_dir(HELLO, {"app.py": "import flask\nraise RuntimeError('boom at import')\n"})
    lines: list[str] = []
    with pytest.raises(BuildError, match="does not import: RuntimeError: boom at import"):
        await Build(ws, "bad-entry", "hello", arch, lines.append).run()
    assert any("boom at import" in ln for ln in lines)
    assert ws.store.list() == [d for d in ws.store.list()]  # store readable
    assert leftovers(ws) == []


async def test_disk_full_is_refused_before_writing(ws: Workspace) -> None:
    before = ws.store.list()
    tight = dataclasses.replace(
        ws, settings=dataclasses.replace(ws.settings, min_free_disk_fraction=0.9999)
    )
    with pytest.raises(BuildError, match="disk too full"):
        await build(tight, "diskfull", tar_dir(HELLO))
    assert ws.store.list() == before
    assert leftovers(ws) == []


async def test_killed_build_leaves_nothing_and_no_process(ws: Workspace, tmp_path: Path) -> None:
    """Cancel a build while its setup.py runs: processes die, files go, store untouched."""
    pidfile_dir = Path(tempfile.mkdtemp(prefix="roost-slow-"))
    os.chmod(pidfile_dir, 0o777)
    app = tmp_path / "app"
    shutil.copytree(HELLO, app)
    (app / "slowpkg").mkdir()
    (app / "slowpkg" / "setup.py").write_text(
        "import os, time\n"
        f"open({str(pidfile_dir / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    (app / "requirements.txt").write_text("flask>=3.0\n./slowpkg\n")
    before = ws.store.list()
    task = asyncio.create_task(build(ws, "killed", tar_dir(app)))
    pid = 0
    for _ in range(600):
        await asyncio.sleep(0.1)
        if (pidfile_dir / "pid").exists() and (pidfile_dir / "pid").read_text():
            pid = int((pidfile_dir / "pid").read_text())
            break
    assert pid, "the slow setup.py never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )
    assert ws.store.list() == before
    assert leftovers(ws) == []
    shutil.rmtree(pidfile_dir, ignore_errors=True)


async def test_startup_sweeps_leftovers_of_a_killed_builder(builder_root: Path) -> None:
    from roost.settings import Settings

    (builder_root / "builds" / "dead-build" / "root").mkdir(parents=True)
    (builder_root / "layers" / ".tmp-deadbeef-1-2").mkdir(parents=True)
    (builder_root / "store" / "tmp").mkdir(parents=True, exist_ok=True)
    (builder_root / "store" / "tmp" / "w-partial").write_bytes(b"half an image")
    ws = await Workspace.open(builder_root, Settings())
    assert leftovers(ws) == []


async def test_django_sample_static_is_collected_into_the_bundle(ws: Workspace) -> None:
    arch = tar_dir(EXAMPLES / "django-sample", {"local_notes.txt": "ignored\n"})
    lines: list[str] = []
    out = await Build(ws, "dj1", "djsample", arch, lines.append).run()
    assert out.static_digest and ws.store.verify(out.static_digest)
    routes = {r.url_prefix: r for r in out.static_routes}
    assert routes["/static/"].path == "django"
    with tarfile.open(ws.store.path(out.static_digest)) as tf:
        names = set(tf.getnames())
        assert all(m.isfile() for m in tf.getmembers())
    assert "django/css/site.css" in names and "django/css/site.css.gz" in names
    assert "django/admin/css/base.css" in names and "django/admin/css/base.css.gz" in names
    with tempfile.TemporaryDirectory() as d:
        unpack(ws.store.path(out.image_digest), Path(d))
        root = Path(d)
        assert not (root / "app" / "local_notes.txt").exists()  # .roostignore
        assert (root / "shortcuts" / "django-admin-media" / "css" / "base.css").is_file()
        assert not (root / "app" / "collected-static").exists()  # STATIC_ROOT redirected
    assert any(ln.startswith("-----> collect static (") for ln in lines)
    assert leftovers(ws) == []
