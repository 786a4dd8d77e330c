"""Dependency layers: a virtualenv per (lock, interpreter), built once, stored once, reused.

Theory of operation: a layer lives in `layers/<key>/`: `venv/` (made by uv
venv --relocatable and uv pip sync of the lock, as the build user; offline
first, from the shared uv cache, online only when the cache lacks something;
hard links into the cache when both are on one filesystem, as
roost.builder.uvcache arranges for in-memory layers, copies otherwise) and
`ready`, a JSON file naming the layer in the image store. The
venv's bytecode is hash-checked, since the layer's files all carry one fixed
mtime, and compiled once per source file (roost.builder.bytecode). The layer
is named by its file manifest (roost.builder.layerpack: each file's path,
mode, size and sha256), so the same lock on the same interpreter and uv
gives the same files, hence the same name, on any builder, and a host that
has the layer never fetches it again; it is stored as an uncompressed tar
(the manifest first, then the venv's contents with sorted names, fixed
owners and a fixed mtime), checked member by member by every host it is
copied to. Until every runner reads layers named so (a rolling upgrade:
`files` False, BuildRequest.layer_files), the layer is the plain tar,
named by its sha256 once stored.

`layers/<key>/` and `ready` belong to the builder (root); only `venv/` is the
build user's, so build code cannot point a layer at another blob.
`LayerJob` holds the per-key lock from "not ready" until `ready` is written
(or the half-made directory is moved away), so one key is installed by one
build at a time and every other build waits and then reuses it. A build
whose lock is unchanged finds `ready`, installs nothing and packs nothing: its
image names the stored blob. A fresh layer is packed by a background task
that runs while the build imports the app (`Build` owns and awaits it), and
only a complete, committed blob makes the directory `ready`.

The trust model is the sandbox's: build steps run as one unprivileged uid,
which owns the venv (and, through uv's hard links, the cache files in it),
so app code run by the import check could alter a layer it shares a uid
with; builds do not isolate one app's code from another's dependencies on
the builder. Layers in use by a running build are never pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.builder import bytecode, layerpack
from roost.builder.errors import BuildError
from roost.builder.interpreter import Interpreter
from roost.builder.jails import shared_parent, uv_jail
from roost.builder.pack import LAYER_TAR_FLAGS, pack_tree, run_abortable
from roost.builder.sandbox import BuildUser, base_env, run
from roost.builder.workspace import Workspace

# 3: bytecode compiled into the layer; 4: named by its files, or by its tar
# (`files` in `ready`; format 3's are those).
LAYER_FORMAT = 4


@dataclass(frozen=True)
class LayerBlob:
    digest: str
    size: int
    # Named by its file manifest (roost.builder.layerpack), not its bytes.
    files: bool = False


# uv's words when a package has no wheel and --no-build forbids building it.
_NEEDS_BUILD = re.compile(r"source distributions.*is disabled|from source is disabled", re.I)


class NeedsBuild(BuildError):
    """Wheels alone do not make this lock: a source distribution must be built."""


def needs_build(output: list[str]) -> bool:
    return any(_NEEDS_BUILD.search(line) for line in output)


@dataclass(frozen=True)
class UvAs:
    """Who runs uv for a layer or a lock, with which cache (pipeline.install).

    Wheels only (`build_sources` False, uv's --no-build): no package's code
    runs, so the shared build user may use the shared cache, writable. A
    source build runs the package's build code: as the app's own build user,
    with the app's own cache, so what it does stays the app's.
    """

    user: BuildUser
    cache: Path
    build_sources: bool
    # More writable paths (the app's checkout, where a local package builds).
    writable: tuple[Path, ...] = ()

    @property
    def flags(self) -> list[str]:
        return [] if self.build_sources else ["--no-build"]


def uv_env(ws: Workspace, home: Path, cache: Path | None = None) -> dict[str, str]:
    return base_env(
        home,
        {
            "UV_CACHE_DIR": str(cache or ws.uv_cache),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "UV_NO_CONFIG": "1",
        },
    )


def read_ready(ws: Workspace, layer: Path, *, tar_only: bool = False) -> LayerBlob | None:
    """The stored blob of a ready layer; None when not ready (or its blob is gone, or
    it is named by its files and `tar_only`: not every runner reads that yet)."""
    try:
        raw = json.loads((layer / "ready").read_text())
        files = raw.get("files", False) is True
        blob = LayerBlob(digest=str(raw["digest"]), size=int(raw["size"]), files=files)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # Format 3's layers are format 4's named by their tar: the same venv.
    if raw.get("format") not in (3, LAYER_FORMAT) or (files and tar_only):
        return None
    if ws.store.is_files(blob.digest) != files or not ws.store.has(blob.digest):
        return None
    return blob


class LayerJob:
    """One build's use of the dependency layer `key` (see the module docstring)."""

    def __init__(
        self,
        ws: Workspace,
        key: str,
        uv_as: UvAs | None = None,
        interp: Interpreter | None = None,
        *,
        files: bool = True,
    ) -> None:
        self.ws = ws
        # Name a fresh layer by its files (else by its tar, once stored).
        self.files = files
        self.key = key
        self.uv_as = uv_as or UvAs(ws.user, ws.uv_cache, build_sources=True)
        self.interp = interp or ws.interp  # the venv's Python (the build's choice)
        self.path = ws.layer_path(key)
        self.installed = False
        self.blob: LayerBlob | None = None
        self._lock = ws.layer_locks.setdefault(key, asyncio.Lock())
        self._held = False
        self._packing: asyncio.Task[LayerBlob] | None = None
        # The blob's digest, known before the blob is stored (layerpack).
        self._named: asyncio.Future[LayerBlob] = asyncio.get_running_loop().create_future()
        # Seconds each phase of a fresh install and pack took (jail, venv,
        # sync, bytecode, pack): what bench/build.py breaks a warm build into.
        self.phases: dict[str, float] = {}

    @property
    def venv(self) -> Path:
        return self.path / "venv"

    async def ensure(
        self,
        lock_path: Path,
        home: Path,
        log: Callable[[str], None],
        unit: str = "install",
        cwd: Path | None = None,
        after_sync: Callable[[], None] | None = None,
    ) -> None:
        """Reuse the ready layer, or install it and start packing it (see `blob_digest`).

        `cwd`: where the lock's relative paths (`./localpkg`) start (the
        checkout). `after_sync`: called once the packages are installed, while
        their bytecode is still to come (a build starts its extension scan).
        """
        await self._lock.acquire()
        self._held = True
        try:
            blob = read_ready(self.ws, self.path, tar_only=not self.files)
            if blob is not None:
                os.utime(self.path / "ready")  # for prune_layers' LRU
                self.blob = blob
                return
            self._discard_dir()
            # The layer directory (and so `ready`, which names a blob in the
            # store) stays the builder's; only venv/ is the build user's.
            self.path.mkdir()
            os.chmod(self.path, 0o755)  # the build user enters it (the umask is 077)
            self.venv.mkdir()
            # Explicitly: the umask is 077, and each app's own build user
            # runs its code with this venv (read-only) after uv made it.
            os.chmod(self.venv, 0o755)
            self.uv_as.user.chown(self.venv)
            await _install(
                self.ws, self.path, lock_path, home, log, unit, self.uv_as, cwd, self.interp,
                after_sync, self.phases,
            )  # fmt: skip
            self.installed = True
            self._packing = asyncio.create_task(self._pack(), name=f"pack-layer-{self.key[:12]}")
        finally:
            if self._packing is None:
                self._done()

    async def _pack(self) -> LayerBlob:
        """Name the layer by its files, then store its archive (roost.builder.layerpack);
        or, not `files`, store its tar and name it by that."""
        if not self.files:
            try:
                start = time.monotonic()
                venv, user, store = self.venv, self.ws.user, self.ws.store
                members = sorted(os.listdir(venv))
                digest, size, _ = await run_abortable(
                    lambda abort: pack_tree(store, venv, members, LAYER_TAR_FLAGS, user, abort)
                )
                self.phases["pack"] = time.monotonic() - start
                return self._ready(LayerBlob(digest=digest, size=size))
            finally:
                self._done()
        start = time.monotonic()
        entry = layerpack.Storing(0, asyncio.get_running_loop().create_future())
        named: layerpack.Named | None = None
        try:
            venv, user = self.venv, self.ws.user
            cache = self.ws.hash_cache
            named = await asyncio.to_thread(layerpack.name_by_files, venv, cache)
            self.phases["name"] = time.monotonic() - start
            entry.size = named.size
            self.ws.storing.setdefault(named.digest, entry)
            self._named.set_result(LayerBlob(digest=named.digest, size=named.size, files=True))

            def writing(tmp: Path) -> None:  # from pack_tree's thread: one assignment
                entry.tmp = tmp

            store, fresh = self.ws.store, named
            digest, size, created = await run_abortable(
                lambda abort: layerpack.pack_named(
                    store, venv, fresh, user, abort, writing=writing, check_members=False
                )
            )
            # Not checked member by member here (a thread hashing 100 MB and
            # parsing thousands of headers holds the interpreter's lock from
            # the event loop serving the copy: the copy took 0.2-0.4 s
            # longer). The tree is its build user's (the shared one; an app's
            # own for a source build), who runs no code once the install's
            # jail has ended, so nothing changes it between the scan and
            # tar; a file grown, shrunk, added or removed meanwhile
            # still shows here, as an archive of another size than the
            # manifest makes. Every copy is checked member by member on the
            # host it lands on (roost.images.layerarchive), and every unpack.
            if size != named.size:
                if created:
                    self.ws.store.delete(digest)
                raise BuildError(
                    f"the dependency layer changed after it was named (its archive is "
                    f"{size} bytes, not the {named.size} its manifest makes; or this "
                    f"GNU tar writes headers other than layerarchive.archive_size "
                    f"expects): not kept"
                )
            self.phases["pack"] = time.monotonic() - start
            return self._ready(LayerBlob(digest=digest, size=size, files=True))
        finally:
            if named is not None and self.ws.storing.get(named.digest) is entry:
                del self.ws.storing[named.digest]
            entry.done.set_result(None)  # waiters find the blob stored now, or never
            self._done()

    def _ready(self, blob: LayerBlob) -> LayerBlob:
        """Mark the layer ready: `ready` names its stored blob."""
        ready = {"format": LAYER_FORMAT, "key": self.key, "python": self.interp.python_id,
                 "digest": blob.digest, "size": blob.size, "files": blob.files}  # fmt: skip
        tmp = self.path / "ready.tmp"
        tmp.write_text(json.dumps(ready))
        os.replace(tmp, self.path / "ready")
        self.blob = blob
        return blob

    async def blob_digest(self) -> LayerBlob:
        """The layer's blob: named (roost.builder.layerpack), perhaps not yet stored."""
        if self.blob is not None:
            return self.blob
        if self._packing is None:
            raise BuildError("internal: dependency layer neither ready nor being packed")
        await asyncio.wait([self._named, self._packing], return_when=asyncio.FIRST_COMPLETED)
        if self._named.done():
            return self._named.result()
        return self._packing.result()

    async def stored(self) -> str:
        """Wait until a fresh layer's blob is stored: "", or why it was not."""
        task = self._packing
        if task is None:
            return ""
        await self.close(finish=True)
        if task.cancelled():
            return "storing the dependency layer was cancelled"
        exc = task.exception()
        return "" if exc is None else str(exc)

    async def close(self, *, finish: bool) -> None:
        """End the job: let a running pack finish (finish=True) or cancel it; wait either way.

        Cancelled while waiting, it cancels the pack and still waits for it.
        """
        task = self._packing
        if task is None:
            return
        if not finish:
            task.cancel()
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait([task])
            raise
        finally:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: its failure is the build's, already reported

    def _done(self) -> None:
        """Release the key; a layer that did not become ready is moved away first."""
        if not self._held:
            return
        self._held = False
        try:
            if not (self.path / "ready").exists():
                self._discard_dir()
        finally:
            self._lock.release()

    def _discard_dir(self) -> None:
        """Move a half-made layer directory out of the way (instant); delete it after."""
        if not self.path.exists():
            return
        trash = self.path.parent / f".tmp-{self.key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(self.path, trash)
        shutil.rmtree(trash, ignore_errors=True)


async def _install(
    ws: Workspace,
    layer: Path,
    lock_path: Path,
    home: Path,
    log: Callable[[str], None],
    unit: str = "install",
    uv_as: UvAs | None = None,
    cwd: Path | None = None,
    interp: Interpreter | None = None,
    after_sync: Callable[[], None] | None = None,
    phases: dict[str, float] | None = None,
) -> None:
    uv_as = uv_as or UvAs(ws.user, ws.uv_cache, build_sources=True)
    interp = interp or ws.interp
    python = interp.path
    venv = layer / "venv"
    # Bytecode is the shared build user's to share (roost.builder.bytecode):
    # a layer built from source, as an app's own user, compiles its own.
    pycs = None if uv_as.build_sources else bytecode.ensure_store(uv_as.cache, uv_as.user)
    writable = list(uv_as.writable)
    both = shared_parent(venv, uv_as.cache)
    if pycs is not None and (both is None or not pycs.is_relative_to(both)):
        writable.append(pycs)  # not in the mount the layer and the cache share
    jail = uv_jail(
        ws.tenancy, unit, uv_bin=ws.uv, python=python, build_dir=lock_path.parent,
        cache=uv_as.cache, layer=venv, limits=ws.step_limits, writable=writable,
    )  # fmt: skip
    # Jailed, HOME is the jail's own /tmp (the build's home is the app user's).
    env = uv_env(ws, Path("/tmp") if ws.tenancy.enabled else home, uv_as.cache)
    common = {"user": uv_as.user, "cwd": cwd or home, "env": env, "jail": jail}
    start = time.monotonic()
    make_venv = [ws.uv, "venv", "--relocatable", "--python", python, "--quiet", str(venv)]
    sync = [ws.uv, "pip", "sync", "--python", str(venv / "bin" / "python"), *uv_as.flags,
            str(lock_path)]  # fmt: skip
    if _device(venv) != _device(uv_as.cache):
        # A layer in memory: hard links cannot reach the cache; say so rather
        # than have uv try each file first and warn.
        sync.append("--link-mode=copy")
    script = _bytecode_script(lock_path.parent)
    compile_pycs = bytecode.argv(python, script, _site(venv, interp), pycs)
    # Offline first: with a warm cache this touches no network at all. The
    # venv, the offline sync and the bytecode run in one jail (a jail costs
    # 0.02-0.05 s to set up, a third of what uv takes to sync), and the line
    # _SYNCED says when the packages are in.
    q = shlex.join
    warm = (f"echo {_JAILED}; {q(make_venv)} || exit {_VENV_FAILED}; echo {_VENV_MADE}; "
            f"{q([*sync, '--offline', '--quiet'])} || exit {_OFFLINE_FAILED}; "
            f"echo {shlex.quote(_SYNCED)}; exec {q(compile_pycs)}")  # fmt: skip
    said: list[str] = []
    # When each marker line arrived: the phases' ends (the jail's set-up ends
    # when its shell first speaks).
    marks = {"": start}

    def watch(line: str) -> None:
        if line in _MARKS:
            marks.setdefault(_MARKS[line], time.monotonic())
        if line == _SYNCED and after_sync is not None:
            after_sync()
        elif line.startswith("bytecode: "):
            said.append(line[:200])

    done = await run(["/bin/sh", "-c", warm], log=watch, indent="", **common)  # type: ignore[arg-type]
    marks["bytecode"] = time.monotonic()
    if phases is not None and len(marks) == len(_MARKS) + 2:  # every marker came
        names, ends = list(marks), list(marks.values())
        phases.update({names[i]: ends[i] - ends[i - 1] for i in range(1, len(names))})
    if done.returncode == 0:
        log(f"       installed from the local cache (offline), bytecode included, in "
            f"{time.monotonic() - start:.2f} s")  # fmt: skip
        log("       " + (said[-1] if said else "bytecode: no report"))
        return
    if done.returncode == _VENV_FAILED:
        for line in done.output_tail:
            log("       " + line)
        raise BuildError("uv venv failed")
    if done.returncode != _OFFLINE_FAILED:
        for line in done.output_tail:
            log("       " + line)
        raise BuildError(f"compiling the dependencies' bytecode failed (exit {done.returncode})")
    log("       some packages are not in the cache: downloading")
    done = await run(sync, log=log, **common)  # type: ignore[arg-type]
    if done.returncode != 0 and not uv_as.build_sources and needs_build(done.output_tail):
        raise NeedsBuild("a package has no wheel: it must be built from source")
    if done.returncode != 0:
        raise BuildError(f"installing dependencies failed (uv pip sync exit {done.returncode})")
    if after_sync is not None:
        after_sync()
    await _bytecode(compile_pycs, log, common)


# How the warm install's one jail ends when not all went well (see _install).
_VENV_FAILED, _OFFLINE_FAILED = 85, 86
_SYNCED = "roost: packages installed"
_JAILED, _VENV_MADE = "roost:jailed", "roost:venv-made"
# Marker line -> the phase it ends.
_MARKS = {_JAILED: "jail", _VENV_MADE: "venv", _SYNCED: "sync"}


def _site(venv: Path, interp: Interpreter) -> Path:
    return venv / "lib" / f"python{interp.minor}" / "site-packages"


def _bytecode_script(build_dir: Path) -> Path:
    script = build_dir / bytecode.SCRIPT.name
    shutil.copyfile(bytecode.SCRIPT, script)
    os.chmod(script, 0o644)
    return script


async def _bytecode(argv: list[str], log: Callable[[str], None], common: dict[str, Any]) -> None:
    """The layer's bytecode (roost.builder.bytecode), in the install step's jail.

    Bytecode in the layer, hash-checked rather than dated: the layer's files
    all carry the fixed mtime, and an image is read-only, so without it every
    start of every instance compiles its imports anew (flask and gunicorn:
    0.40 s of imports become 0.17 s, measured).
    """
    start = time.monotonic()
    done = await run(argv, log=None, capture_stdout=True, **common)
    if done.returncode != 0:
        for line in done.output_tail:
            log("       " + line)
        raise BuildError(f"compiling the dependencies' bytecode failed (exit {done.returncode})")
    said = done.stdout.decode("utf-8", "replace").strip()[-200:]
    log(f"       {said} ({time.monotonic() - start:.2f} s)")


def prune_layers(ws: Workspace, keep: int) -> list[str]:
    """Remove least recently used ready layers (never in-use ones); returns their keys.

    At most `keep` layers stay in all, and the in-memory ones stay within
    `settings.builder_layers_ram` bytes. Only the builder's directory goes:
    the blob stays in the store, since released images name it.
    """
    ready: list[tuple[float, int, Path]] = []
    for root in ws.layer_roots():
        for p in root.iterdir():
            if p.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
                stamp = (p / "ready").stat().st_mtime
                size = int(json.loads((p / "ready").read_text())["size"])
                ready.append((stamp, size, p))
    ready.sort(key=lambda r: r[0], reverse=True)
    removed = []
    ram_budget = ws.settings.builder_layers_ram
    kept = ram_bytes = 0
    for _, size, path in ready:
        key = path.name
        in_ram = ws.ram_layers is not None and path.parent == ws.ram_layers
        over = kept >= keep or (in_ram and ram_bytes + size > ram_budget)
        busy = ws.layers_in_use.get(key) or ws.layer_locks.get(key, asyncio.Lock()).locked()
        if not over or busy:
            kept += 1
            ram_bytes += size if in_ram else 0
            continue
        trash = path.parent / f".tmp-prune-{key[:16]}-{time.monotonic_ns()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(key)
    return removed


def _device(path: Path) -> int:
    return os.stat(path).st_dev
