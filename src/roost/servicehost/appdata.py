"""The canonical copy of each app's persistent data directory.

  ROOT/<app>/                              the files: the app's own live tree
  ROOT/.versions.json                      app -> version (changes after each write)
  ROOT/.roost-appdata                      the marker runners look for (roost.datadir)
  DATA/servicehost/archive/APP.KEY.STAMP/  a deleted app's directory (roost.appdirs)

ROOT is `roost.datadir.shared.root_for` (DATA/servicehost/appdata unless
ROOST_APPDATA_ROOT names the shared file system's mount). A runner that sees
the marker binds `ROOT/<app>` live into the app's sandboxes; one that cannot
(a host the tree does not reach) copies it (`DataPull`); a version tells
them whether their copy is current. A version is a millisecond timestamp
that never goes backwards for an app, so it stays distinct across
servicehost restarts. The archive carries regular files and directories
only: symlinks stay here (rsync stores them munged, so they point nowhere),
and nothing else (devices, fifos) is ever copied out.

When the app is deleted (AppRemoved) its directory moves to the archive and
its version is forgotten, so a new app of the same name starts empty: the
controller deletes nothing until every servicehost confirmed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import logging
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from roost import appdirs
from roost.datadir import quota
from roost.datadir.shared import mark
from roost.servicehost.names import BadAppName, check_app
from roost.sysuser import chown_tree
from roost.wire.messages import AppRemoved, Error, Msg, Ok

log = logging.getLogger("roost.servicehost")

PURGE_S = 3600.0


class AppData:
    def __init__(
        self, root: Path, owner: tuple[int, int] | None = None, archive: Path | None = None
    ) -> None:
        """`owner`: (uid, gid) the transfer tools run as, who owns the files;
        `archive`: where deleted apps' directories go (default: beside `root`)."""
        self.root = root
        self.owner = owner
        self.archive_root = archive if archive is not None else root.parent / "archive"
        # Each app's quota in MiB: its tree a file system of its own (0: none).
        self.quota_mb = 0
        # Whether trees here take quotas at all (not in a tree an operator
        # mounted, ROOST_APPDATA_ROOT): an app's own size applies only then.
        self.quotas = True
        self._sizes: dict[str, int] = {}  # app -> its own size, as sessions said
        # In a cluster's shared tree: mounts ROOT/APP with a quota of its own
        # (app, MiB, owner; roost.datadir.weedquota) instead of an image.
        self.shared_quota: Callable[[str, int, tuple[int, int]], None] | None = None
        self._versions_file = root / ".versions.json"
        self._versions: dict[str, int] = {}

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Searchable, not listable: the tools' user reaches its apps' dirs.
        os.chmod(self.root, 0o711)
        mark(self.root)
        # Each app's files are for that app alone (older versions made its
        # directory 0755): only the tools' user, which owns it, may enter.
        for d in self.root.iterdir():
            st = d.lstat()
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(d, stat.S_IMODE(st.st_mode) & 0o700)
        try:
            self._versions = {
                k: int(v) for k, v in json.loads(self._versions_file.read_text()).items()
            }
        except (FileNotFoundError, ValueError):
            self._versions = {}

    def dir(self, app: str, owner: tuple[int, int] | None = None, quota_mb: int = 0) -> Path:
        """The app's directory (created on first use), owned by `owner` (the
        app's own user, whose transfer tools write there) or else `self.owner`;
        `quota_mb`: the app's own quota (`roost data quota`), else the host's."""
        d = self.root / check_app(app)
        owner = owner or self.owner
        if quota_mb:
            self._sizes[app] = quota_mb
        # A call that names no size (a backup's pack, a runner's pull) keeps
        # the one the app's last session brought: a tree is not remounted,
        # in a cluster, back and forth between the app's size and the host's.
        size = (quota_mb or self._sizes.get(app) or self.quota_mb) if self.quotas else 0
        if size and self.shared_quota is not None and owner is not None:
            self.shared_quota(app, size, owner)
        elif size and self.shared_quota is None:
            quota.ensure(self.root, app, size, owner)
        if not d.is_dir():
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)  # whatever the umask: the app's files are its own
            if owner is not None:
                os.chown(d, *owner)
        elif owner is not None and owner != self.owner and _owner(d) != owner:
            # Written by the tools' shared user before the tree was the app's
            # own (or restored as that user): the app's from now on.
            chown_tree(d, *owner)
        return d

    def apps(self) -> list[str]:
        """The apps that have a data directory here."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in self.root.iterdir():
                try:
                    check_app(entry.name)
                except BadAppName:
                    continue  # .versions.json, a restore's staging directory
                if entry.is_dir() and not entry.is_symlink():
                    out.append(entry.name)
        return sorted(out)

    def version(self, app: str) -> int:
        check_app(app)
        return self._versions.get(app, 0)

    def bump(self, app: str) -> int:
        """Record that `app`'s data may have changed; its new version."""
        check_app(app)
        new = max(int(time.time() * 1000), self._versions.get(app, 0) + 1)
        self._versions[app] = new
        self._save_versions()
        return new

    def _save_versions(self) -> None:
        tmp = self._versions_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._versions, sort_keys=True))
        os.replace(tmp, self._versions_file)

    def removed(self, app: str, key: str, now: float) -> Path | None:
        """The app (incarnation `key`) was deleted: archive its directory and
        forget its version. Idempotent; the archive entry, or None."""
        check_app(app)
        tree = self.root / app
        if os.path.ismount(tree):
            moved = self._remove_image(app, key, now)
        else:
            moved = appdirs.remove(tree, self.archive_root, app, key, now)
        if self._versions.pop(app, None) is not None:
            self._save_versions()
        return moved

    def _remove_image(self, app: str, key: str, now: float) -> Path | None:
        """A tree with a quota is archived as its image (a mount point cannot
        move): detached first (lazily: the app's last processes may be ending)."""
        tree = self.root / app
        if appdirs.on_removed(appdirs.read_key(tree), key) == "keep":
            return None
        quota.detach(tree)
        image = quota.images_for(self.root) / f"{app}.ext4"
        moved = appdirs.archive(image, self.archive_root, app, key, now, ".image")
        with contextlib.suppress(OSError):
            tree.rmdir()
        return moved

    def usage(self) -> list[tuple[str, quota.Usage]]:
        """Each app with a quota here: what it stores and may store."""
        return [(a, quota.usage(self.root / a)) for a in quota.mounted_apps(self.root)]

    async def on_removed(self, msg: AppRemoved) -> Msg:
        """AppRemoved, answered: the directory archived (its path), or why not."""
        try:
            moved = self.removed(msg.app, msg.app_key, time.time())
        except (BadAppName, appdirs.BadKey, OSError, quota.QuotaError) as exc:
            return Error(message=f"could not archive the data directory of {msg.app}: {exc}")
        return Ok(detail=str(moved or ""))

    async def purge_loop(self, keep_s: float) -> None:
        """Remove archived directories older than `keep_s`, now and every PURGE_S."""
        while True:
            try:
                await asyncio.to_thread(appdirs.purge, self.archive_root, keep_s, time.time())
            except OSError as exc:
                log.warning("could not purge %s: %s", self.archive_root, exc)
            await asyncio.sleep(PURGE_S)

    def archive(self, app: str) -> bytes:
        """tar.gz of the app's directory: regular files and directories only."""
        return pack_tree(self.dir(app))


def _owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


def pack_tree(root: Path) -> bytes:
    """The same tree packs to the same bytes: gzip's header holds no clock time
    (tarfile's "w:gz" writes the current second), so two hosts' views of one
    tree compare equal and an unchanged tree's data pulls are identical."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            base = Path(dirpath)
            for name in [*sorted(dirnames), *sorted(filenames)]:
                path = base / name
                st = os.lstat(path)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode &= 0o777
                if info.isreg():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()
