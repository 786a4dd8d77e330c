"""Keeping this host's copy of each app's data directory in step with the
canonical copy on the servicehost (written there by rsync, scp and sftp).

Theory of operation: the servicehost numbers each app's data directory
(a version that changes whenever a transfer may have changed it). The runner
asks for it before it starts instances of an app (the image fetch step), before
a `run`, and every `interval` for the apps it runs; when the version differs
from the one it applied last it pulls the whole tree (tar.gz) and applies it:

  - every file of the canonical copy replaces the local one;
  - a path the previous pull brought and the canonical copy no longer has is
    removed (so deletions made with `rsync --delete` reach the runners);
  - files the app itself created on this host are left alone.

What came with the last pull is recorded in `data.manifest.json` beside the
directory. Symlinks are not carried (the servicehost leaves them out), and a
symlink the app made where the canonical copy has a directory is replaced by
a real directory, so applying a pull never writes outside the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import stat
import tarfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from roost.runner.layout import Layout
from roost.tenant.identity import Identity
from roost.wire.codec import BadMessage
from roost.wire.messages import DataArchive, DataPull
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.runner")

PULL_TIMEOUT_S = 30.0
# Before an instance or a command starts: a servicehost that is down must not
# hold them up for long (the periodic refresh catches up later).
START_PULL_TIMEOUT_S = 5.0


class ImageProviderLike(Protocol):
    async def ensure(self, app: str, digest: str) -> Path: ...

    def release(self, digest: str) -> None: ...


class DataSync:
    def __init__(
        self,
        client: RpcClient | None,
        layout: Layout,
        interval: float,
        apps: Callable[[], Iterable[str]],
    ) -> None:
        self.client = client
        self.layout = layout
        self.interval = interval
        self.apps = apps
        # The app's own identity, to apply its pulls as (None: unconfined).
        self.owner_of: Callable[[str], Identity | None] = lambda _app: None
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for app in sorted(set(self.apps())):
                await self.refresh(app)

    def _version_file(self, app: str) -> Path:
        return self.layout.app_home(app) / "data.version"

    def have_version(self, app: str) -> int:
        try:
            return int(self._version_file(app).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    async def refresh(self, app: str, timeout: float = PULL_TIMEOUT_S) -> bool:
        """Pull `app`'s data if it changed; True when something was applied.

        Never raises: a servicehost that cannot be reached leaves the local
        copy as it is (the app keeps running on what it has).
        """
        if self.client is None or self.layout.live_data():
            return False  # the live tree (roost.datadir) needs no copy
        async with self._locks[app]:
            have = self.have_version(app)
            try:
                reply = await self.client.call(
                    DataPull(app=app, have_version=have), timeout=timeout, tries=1
                )
            except (RpcTimeout, RemoteError, BadMessage) as exc:
                log.warning("%s: could not refresh the data directory: %s", app, exc)
                return False
            if not isinstance(reply, DataArchive) or reply.unchanged or reply.version == have:
                return False
            try:
                await asyncio.to_thread(
                    apply_archive,
                    self.layout.data_directory(app),
                    self.layout.app_home(app) / "data.manifest.json",
                    reply.archive,
                    self.owner_of(app),
                )
            except (OSError, tarfile.TarError, ValueError) as exc:
                log.warning("%s: could not apply the data directory: %s", app, exc)
                return False
            tmp = self._version_file(app).with_suffix(".tmp")
            tmp.write_text(f"{reply.version}\n")
            os.replace(tmp, self._version_file(app))
            log.info("%s: data directory refreshed (version %d)", app, reply.version)
            return True


def _real_dir(root: Path, rel: str) -> Path:
    """root/rel as a real directory (no symlink on the way), made if needed."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir()
            continue
        if not stat.S_ISDIR(st.st_mode):
            path.unlink()
            path.mkdir()
    return path


def apply_archive(
    dest: Path, manifest_path: Path, archive: bytes, as_user: Identity | None = None
) -> None:
    """Apply a pull to `dest`; as `as_user` (the app's own uid) when given.

    The data directory belongs to the app, whose processes run while a pull
    is applied: as root, every check of a path (`_real_dir`) could be raced
    by the app swapping a directory for a symlink just before the rename,
    and root would write where the app pointed. As the app's own uid, the
    worst such a race can do is write where the app could write anyway.
    The manifest (in the app's home, root's) is read and written here.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        old = set(json.loads(manifest_path.read_text()))
    except (FileNotFoundError, ValueError):
        old = set()
    if as_user is not None and os.geteuid() == 0:
        # The directory entry itself sits in the app's home (root's): the app
        # cannot swap it, so giving it over here is safe.
        os.lchown(dest, as_user.uid, as_user.gid)
        os.chmod(dest, 0o700)
        new = _apply_as(as_user, dest, old, archive)
    else:
        new = _apply(dest, old, archive)
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(new)))
    os.replace(tmp, manifest_path)


def _apply_as(ident: Identity, dest: Path, old: set[str], archive: bytes) -> set[str]:
    """`_apply` in a child that has dropped to `ident`; the new names come back on a pipe.

    A fork, not an exec: the runner's interpreter may live where the app's
    uid cannot reach (under /root), and the child only runs code already
    loaded before it exits.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r)
            # Enter it as root: the app's uid may not walk DATA (the runner's
            # directory is root's alone), only work inside its own tree.
            os.chdir(dest)
            os.setgroups([])
            os.setgid(ident.gid)
            os.setuid(ident.uid)
            out = json.dumps(sorted(_apply(Path("."), old, archive))).encode()
            with os.fdopen(w, "wb") as fh:
                fh.write(out)
            code = 0
        except BaseException as exc:  # reported as the exit status; stderr for the log
            with contextlib.suppress(Exception):
                os.write(2, f"data pull as {ident.name}: {exc}\n".encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        raw = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(f"applying the data pull as {ident.name} failed")
    return set(json.loads(raw))


def _apply(dest: Path, old: set[str], archive: bytes) -> set[str]:
    # Inside the data directory: as the app's uid, that is where it may write.
    incoming = dest / f".roost-incoming-{secrets.token_hex(4)}"
    incoming.mkdir()
    try:
        new: set[str] = set()
        dirs: list[str] = []
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = []
            for m in tar.getmembers():
                name = os.path.normpath(m.name)
                if name in (".", "") or name.startswith(("/", "..")):
                    continue
                if m.isdir():
                    dirs.append(name)
                    new.add(name)
                elif m.isfile():
                    members.append(m)
                    new.add(name)
            tar.extractall(incoming, members=members, filter="data")
        for d in sorted(dirs):
            _real_dir(dest, d)
        for name in sorted(new - set(dirs)):
            parent = os.path.dirname(name)
            target_dir = _real_dir(dest, parent) if parent else dest
            target = target_dir / os.path.basename(name)
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
            os.replace(incoming / name, target)
        real_dest = os.path.realpath(dest)
        # Deepest first, so a directory is emptied before it is considered.
        for name in sorted(old - new, key=lambda n: n.count("/"), reverse=True):
            path = dest / name
            real_parent = os.path.realpath(path.parent)
            if real_parent != os.path.normpath(os.path.join(real_dest, os.path.dirname(name))):
                continue  # the app put a symlink on the way: not ours to follow
            with contextlib.suppress(OSError):
                if path.is_symlink() or not path.is_dir():
                    path.unlink()
                else:
                    path.rmdir()  # only when empty: the app's own files stay
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return new


class RefreshingImages:
    """The supervisor's image provider, refreshing the app's data directory
    before each image is made ready (so before new instances of it start)."""

    def __init__(self, images: ImageProviderLike, data: DataSync) -> None:
        self.images = images
        self.data = data

    async def ensure(self, app: str, digest: str) -> Path:
        await self.data.refresh(app, START_PULL_TIMEOUT_S)
        return await self.images.ensure(app, digest)

    def release(self, digest: str) -> None:
        self.images.release(digest)
