"""Where every app's data directory lives, for the roles that reach it.

Theory of operation. Each app has one POSIX tree, `ROOT/<app>/`, that its
instances, `run` sessions and cron jobs (on the runner) and the rsync, scp
and sftp sessions the gateways relay (on the servicehost) all read and write
live. ROOT is `ROOST_APPDATA_ROOT`, else `DATA/servicehost/appdata`: a plain
directory on one machine; in a cluster, the mount of the replicated file
system, at the same path on every host.

The servicehost creates ROOT and puts a marker file in it. A runner binds an
app's tree into its sandboxes only when it sees that marker under ROOT: the
tree is then the servicehost's very own (one machine) or the shared file
system's (a cluster that mounts it). A runner that cannot see the marker is
on a host the tree does not reach, and keeps its older, pulled copy
(`roost.runner.datasync`), so nothing silently writes to a directory no
other instance reads.

The tree belongs to the app's own user (`roost.tenant.identity`), the same
uid on every host, so that every party writing to it (the app, and the
transfer tools run as that user) sees the same owner and modes.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = ".roost-appdata"
# What the servicehost accepts as an app name (roost.servicehost.names).
_APP = re.compile(r"[a-z0-9_-]{1,48}")


class BadAppName(ValueError):
    pass


def root_for(data_dir: Path, configured: str = "") -> Path:
    """The directory holding every app's data directory on this host."""
    return Path(configured) if configured else data_dir / "servicehost" / "appdata"


def is_live(root: Path) -> bool:
    """Does `root` hold the servicehost's tree (its marker is there)?"""
    return (root / MARKER).is_file()


def serves_here(data_dir: Path, configured: str = "") -> bool:
    """Does this host's servicehost keep the tree in this DATA (one machine,
    or a host running both roles)? Then a runner need not wait for the
    marker: it may make the tree itself, so that no instance it starts
    before the servicehost is up writes to a copy nobody else reads. Not in
    a cluster's shared tree (DATA/appdata.json): the tree is the mount's,
    which marks itself once the servicehost has made it."""
    if configured or (data_dir / "appdata.json").exists():
        return False
    return (data_dir / "keys" / "servicehost.key_secret").exists()


def make(root: Path) -> None:
    """Create `root` as the servicehost does (searchable, not listable) and mark it."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)
    mark(root)


def mark(root: Path) -> None:
    """Say that `root` is the live tree (the servicehost, once it made it)."""
    path = root / MARKER
    if not path.is_file():
        path.write_text("the apps' data directories (roost.datadir)\n")
        path.chmod(0o644)


def app_tree(root: Path, app: str) -> Path:
    """`root/<app>`: an app name is one plain path component, checked here."""
    if not _APP.fullmatch(app):
        raise BadAppName(f"{app!r} is not an app name")
    return root / app
