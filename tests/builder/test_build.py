"""Real builds: uv from PyPI (cached for the session), as the build user."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path

import psutil
import pytest

from roost.builder import layerpack, pylayer
from roost.builder import layers as layers_mod
from roost.builder.errors import BuildError
from roost.builder.layers import read_ready
from roost.builder.pipeline import Build, BuildOutcome
from roost.builder.workspace import Workspace
from roost.images.cache import ImageCache
from roost.images.fetch import store_fetcher
from roost.images.manifest import read_manifest
from roost.runner.confine import interpreter_mount

from .conftest import EXAMPLES, tar_dir

# Builds run as this app's own build user (b<id>-<app>), as the daemon's do.
APP_ID = 11

HELLO = EXAMPLES / "hello"


async def build(
    ws: Workspace, build_id: str, archive: bytes, **kw: str
) -> tuple[BuildOutcome, list[str]]:
    lines: list[str] = []
    out = await Build(ws, build_id, "hello", archive, lines.append, app_id=APP_ID, **kw).run()
    return out, lines


def leftovers(ws: Workspace) -> list[str]:
    """Anything a finished or dead build may not leave: its directory, half-made
    layers (temporary or never marked ready), partial store writes."""
    found = [p.name for p in ws.builds.iterdir()]
    for root in ws.layer_roots():
        found += [p.name for p in root.iterdir() if read_ready(ws, p) is None]
    found += [p.name for p in ws.store.tmp_dir.iterdir()]
    return found


async def compose(ws: Workspace, digest: str, cache_dir: Path) -> Path:
    """The image root a runner would get (layers fetched from the builder's store)."""
    return await ImageCache(cache_dir, 1 << 34).ensure(digest, store_fetcher(ws.store))


async def test_hello_builds_an_image_and_second_build_installs_nothing(
    ws: Workspace, tmp_path: Path
) -> None:
    first, lines1 = await build(ws, "h1", tar_dir(HELLO))
    assert first.image_digest.startswith("sha256:") and ws.store.verify(first.image_digest)
    assert "flask==" in first.lock and "gunicorn==" in first.lock  # gunicorn added
    assert any(ln.startswith("-----> install (") for ln in lines1)
    manifest = read_manifest(ws.store.path(first.image_digest))
    assert manifest is not None
    # The interpreter too: the default one (Roost's own minor) is a pyenv build here.
    assert ws.pythons.default.carried
    python = await pylayer.ensure_layer(ws, ws.pythons.default)  # packed by the build
    assert [(lr.path, lr.digest) for lr in manifest.layers] == [
        ("venv", first.layer_digest), ("", first.code_digest), ("python", python.digest)
    ]  # fmt: skip
    assert first.image_size == ws.store.size(first.image_digest) + manifest.size
    assert all(ws.store.verify(lr.digest) for lr in manifest.layers)
    # The layer's `ready` (which names its blob) is out of the build user's reach.
    layer = ws.layers / first.layer_key
    # In memory on a machine with a tmpfs /dev/shm (roost.builder.ramlayers).
    assert ws.ram_layers is not None and layer.parent == ws.ram_layers and layer.is_dir()
    assert layer.stat().st_uid == os.geteuid() and not layer.stat().st_mode & 0o022
    assert (layer / "venv").stat().st_uid == ws.user.uid
    # uv's cache is in the same tmpfs (roost.builder.uvcache): the layer's files
    # are hard links into it, not copies.
    assert ws.uv_cache.parent == ws.ram_layers.parent
    flask = next((layer / "venv" / "lib").glob("python3.*/site-packages/flask/app.py"))
    assert flask.stat().st_nlink >= 2
    layer_dirs = sorted(p.name for p in ws.layers.iterdir())
    before = set(ws.store.list())
    # Code-only change: same requirements, so the lock and the layer are reused:
    # nothing installed, and nothing new in the store but the code and manifest.
    second, lines2 = await build(
        ws, "h2", tar_dir(HELLO, {"extra.py": "X = 1\n"}), previous_lock_text=first.lock
    )
    assert second.installed is False
    assert second.layer_key == first.layer_key and second.lock == first.lock
    assert second.layer_digest == first.layer_digest
    assert any("nothing installed" in ln for ln in lines2)
    assert not any("resolving requirements" in ln for ln in lines2)
    assert second.image_digest != first.image_digest
    assert set(ws.store.list()) - before == {second.image_digest, second.code_digest}
    assert sorted(p.name for p in ws.layers.iterdir()) == layer_dirs
    # The image layout the runner relies on, composed from the layers.
    root = await compose(ws, second.image_digest, tmp_path / "cache")
    meta = json.loads((root / "roost-image.json").read_text())
    assert meta["app"] == "hello" and meta["checkout_name"] == "app"
    assert (root / "app" / "app.py").is_file() and (root / "app" / "extra.py").is_file()
    assert (root / "venv").is_symlink() and (root / "venv" / "bin" / "gunicorn").exists()
    assert (root / "venv" / "pyvenv.cfg").read_text().count("relocatable = true") == 1
    # What a runner's sandbox mounts at the path the interpreter was installed at.
    interp = ws.pythons.default
    assert meta["python"]["prefix"] == interp.prefix and meta["python"]["layer"] == "python"
    assert interpreter_mount(root) == ((root / "python").resolve(), Path(interp.prefix))
    assert (root / "python" / "bin" / f"python{interp.minor}").is_file()
    assert not (root / "python" / "lib" / f"python{interp.minor}" / "test").exists()
    assert leftovers(ws) == []


async def test_bad_requirement_line_fails_with_reason(ws: Workspace) -> None:
    arch = tar_dir(HELLO, {"requirements.txt": "flask>=3.0\nthis is not a requirement ==\n"})
    lines: list[str] = []
    with pytest.raises(BuildError, match="cannot resolve the requirements"):
        await Build(ws, "bad-req", "hello", arch, lines.append, app_id=APP_ID).run()
    assert any("lock failed" in ln for ln in lines)
    assert leftovers(ws) == []


async def test_missing_requirements_file_is_named(ws: Workspace, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(HELLO, app)
    (app / "epio.ini").write_text("[wsgi]\nrequirements = deps/missing.txt\nentrypoint = app:app\n")
    with pytest.raises(BuildError, match=r"deps/missing\.txt"):
        await build(ws, "missing-req", tar_dir(app))
    assert leftovers(ws) == []


# A release phase runs the app's code before any instance would import it.
RELEASE_PHASE = {"Procfile": "release: python -c pass\n"}


async def test_entrypoint_that_does_not_import_fails_the_build_before_a_release_phase(
    ws: Workspace,
) -> None:
    broken = {"app.py": "import flask\nraise RuntimeError('boom at import')\n"}
    arch = tar_dir(HELLO, {**broken, **RELEASE_PHASE})
    lines: list[str] = []
    with pytest.raises(BuildError, match="does not import: RuntimeError: boom at import"):
        await Build(ws, "bad-entry", "hello", arch, lines.append, app_id=APP_ID).run()
    assert any("boom at import" in ln for ln in lines)
    assert ws.store.list() == [d for d in ws.store.list()]  # store readable
    assert leftovers(ws) == []


async def test_without_a_release_phase_the_instances_start_is_the_import_check(
    ws: Workspace,
) -> None:
    """No separate check: the web instances import the entrypoint as they
    start, and a release whose instances crash fails with their traceback
    (tests/e2e/test_platform: bad-entrypoint)."""
    arch = tar_dir(HELLO, {"app.py": "import flask\nraise RuntimeError('boom at import')\n"})
    out, lines = await build(ws, "unchecked", arch)
    assert (
        out.image_digest and "       app:app: imported by the new instances as they start" in lines
    )
    assert not any("boom at import" in ln for ln in lines)  # never ran here
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
    """Cancel a build while its setup.py runs: processes die, files go, store untouched.

    The setup.py starts a child that escapes into its own session (the way a
    daemon would), so the build step's sandbox, not its process group, must
    end it. It is found from outside by its unique command line: inside the
    step's sandbox it sees nothing of the host (not even the host's /tmp).
    """
    marker = str(6000 + os.getpid() % 1000)
    app = tmp_path / "app"
    shutil.copytree(HELLO, app)
    (app / "slowpkg").mkdir()
    (app / "slowpkg" / "setup.py").write_text(
        "import subprocess, time\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    (app / "requirements.txt").write_text("flask>=3.0\n./slowpkg\n")
    before = ws.store.list()
    task = asyncio.create_task(build(ws, "killed", tar_dir(app)))

    def sleepers() -> list[psutil.Process]:
        return [
            p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]
        ]

    found: list[psutil.Process] = []
    for _ in range(600):
        await asyncio.sleep(0.1)
        if found := sleepers():
            break
    assert found, "the slow setup.py never started"
    assert task.done() is False
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert sleepers() == []
    assert ws.store.list() == before
    assert leftovers(ws) == []


async def test_startup_sweeps_leftovers_of_a_killed_builder(builder_root: Path) -> None:
    from roost.settings import Settings

    (builder_root / "builds" / "dead-build" / "root").mkdir(parents=True)
    (builder_root / "layers" / ".tmp-deadbeef-1-2").mkdir(parents=True)
    (builder_root / "store" / "tmp").mkdir(parents=True, exist_ok=True)
    (builder_root / "store" / "tmp" / "w-partial").write_bytes(b"half an image")
    ws = await Workspace.open(builder_root, Settings())
    assert leftovers(ws) == []


async def test_django_sample_static_is_collected_into_the_bundle(
    ws: Workspace, tmp_path: Path
) -> None:
    arch = tar_dir(EXAMPLES / "django-sample", {"local_notes.txt": "ignored\n"})
    lines: list[str] = []
    out = await Build(ws, "dj1", "djsample", arch, lines.append, app_id=APP_ID).run()
    assert out.static_digest and ws.store.verify(out.static_digest)
    routes = {r.url_prefix: r for r in out.static_routes}
    assert routes["/static/"].path == "django"
    with tarfile.open(ws.store.path(out.static_digest)) as tf:
        names = set(tf.getnames())
        assert all(m.isfile() for m in tf.getmembers())
    assert "django/css/site.css" in names and "django/css/site.css.gz" in names
    assert "django/admin/css/base.css" in names and "django/admin/css/base.css.gz" in names
    root = await compose(ws, out.image_digest, tmp_path / "cache")
    assert not (root / "app" / "local_notes.txt").exists()  # .roostignore
    assert (root / "shortcuts" / "django-admin-media" / "css" / "base.css").is_file()
    assert not (root / "app" / "collected-static").exists()  # STATIC_ROOT redirected
    assert any(ln.startswith("-----> collect static (") for ln in lines)
    assert leftovers(ws) == []


def app_with(requirements: str, app_py: str, tmp: Path) -> bytes:
    app = tmp / "app"
    shutil.copytree(HELLO, app)
    (app / "requirements.txt").write_text(requirements)
    (app / "app.py").write_text(app_py)
    return tar_dir(app)


def ready_layers(ws: Workspace) -> set[str]:
    return {p.name for p in ws.layers.iterdir() if read_ready(ws, p) is not None}


async def test_failed_import_keeps_the_fresh_layer_for_the_next_deploy(
    ws: Workspace, tmp_path: Path
) -> None:
    before = ready_layers(ws)
    app_with("markupsafe\n", "raise RuntimeError('not yet')\n", tmp_path / "1")
    broken = tar_dir(tmp_path / "1" / "app", RELEASE_PHASE)  # so the build imports it
    with pytest.raises(BuildError, match="does not import"):
        await build(ws, "keep1", broken)
    new = ready_layers(ws) - before
    assert len(new) == 1  # the app failed, its dependencies did not
    assert leftovers(ws) == []
    fixed = app_with(
        "markupsafe\n", "def app(environ, start_response):\n    return []\n", tmp_path / "2"
    )
    out, _ = await build(ws, "keep2", fixed)
    assert out.installed is False and {out.layer_key} == new


async def test_cancel_while_the_layer_is_packed_leaves_nothing(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, aborted = threading.Event(), threading.Event()

    def stuck_pack(*args: object, **_: object) -> tuple[str, int, bool]:
        abort = args[-1]
        assert isinstance(abort, threading.Event)
        started.set()
        while not abort.wait(0.05):
            pass
        aborted.set()
        raise BuildError("build cancelled")

    # A layer named by its tar packs in layers, one named by its files in layerpack.
    monkeypatch.setattr(layers_mod, "pack_tree", stuck_pack)
    monkeypatch.setattr(layerpack, "pack_tree", stuck_pack)
    before_store, before_layers = ws.store.list(), ready_layers(ws)
    arch = app_with(
        "itsdangerous\n", "def app(environ, start_response):\n    return []\n", tmp_path
    )
    lines: list[str] = []
    task = asyncio.create_task(
        Build(ws, "packcancel", "hello", arch, lines.append, app_id=APP_ID).run()
    )
    assert await asyncio.to_thread(started.wait, 120), "the layer was never packed"
    for _ in range(100):  # let the build reach its last step, waiting on the pack
        if any("waiting for the dependency layer" in ln for ln in lines):
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aborted.is_set()  # the packing thread stopped before the build returned
    assert ws.store.list() == before_store and ready_layers(ws) == before_layers
    assert leftovers(ws) == []
    assert not any(lock.locked() for lock in ws.layer_locks.values())


async def test_upload_with_private_files_builds_and_its_image_is_readable(ws: Workspace) -> None:
    """A 0600 requirements.txt or module (a developer's umask) still builds:
    uv and the app's build user read them, and so will the app's own user."""
    arch = tar_dir(HELLO)
    with tarfile.open(fileobj=io.BytesIO(arch)) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as out:
        for m, data in members:
            if m.isfile():
                m.mode = 0o600
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    built, _ = await build(ws, "private-files", buf.getvalue())
    with tarfile.open(ws.store.path(built.code_digest)) as tf:
        modes = {m.name: m.mode for m in tf if m.isfile()}
    assert modes and all(mode & 0o444 == 0o444 for mode in modes.values()), modes


async def test_a_source_build_runs_as_the_app_with_its_own_cache(
    ws: Workspace, tmp_path: Path
) -> None:
    """A package with no wheel runs its build code: as the app's own build user,
    with the app's own uv cache and a layer no other app shares. The shared
    cache, which every app's wheels come from, stays out of its reach."""
    app = tmp_path / "app"
    shutil.copytree(HELLO, app)
    (app / "localpkg").mkdir()
    (app / "localpkg" / "setup.py").write_text(
        "import os, pathlib\n"
        "from setuptools import setup\n"
        "cache = os.environ.get('UV_CACHE_DIR', '')\n"
        "try:\n"
        "    pathlib.Path(cache, 'poisoned-by-setup-py').write_text('x')\n"
        "except OSError:\n"
        "    pass\n"
        "print('SETUP_PY_UID', os.getuid(), 'CACHE', cache, flush=True)\n"
        "setup(name='localpkg', version='1.0', py_modules=[])\n"
    )
    (app / "requirements.txt").write_text("flask>=3.0\n./localpkg\n")
    # The wheel-only layer of the same app without the local package is shared
    # (and its modules' pycs are in the shared bytecode store).
    plain, _ = await build(ws, "plain", tar_dir(HELLO))
    assert "-" not in plain.layer_key
    lines: list[str] = []
    try:
        out = await Build(ws, "srcbuild", "hello", tar_dir(app), lines.append, app_id=APP_ID).run()
    except BuildError:
        raise AssertionError("\n".join(lines)) from None
    assert any("as the app's own build user" in ln for ln in lines), lines
    assert out.layer_key.endswith(f"-{2_000_000_000 + APP_ID}")
    assert not (ws.uv_cache / "poisoned-by-setup-py").exists()
    assert not list(ws.uv_cache.rglob("poisoned-by-setup-py"))
    # Nor the shared bytecode store (builder/bytecode.py): this layer compiled
    # its own pycs, linked to nothing another app's layer runs.
    said = [ln for ln in lines if ln.startswith("       bytecode: ")]
    assert said and " 0 reused," in said[-1], said
    site = next((ws.layers / out.layer_key / "venv" / "lib").glob("python3.*/site-packages"))
    pycs = list(site.rglob("*.pyc"))
    assert pycs and all(p.stat().st_nlink == 1 for p in pycs)
