"""rsync, scp and sftp on an app's data directory, relayed by a gateway.

The gateway has parsed the client's command and checked that the account may
use the app; here the command is rebuilt from the parts with a second,
independent set of checks, because this is where it runs:

  - the tools run as the app's own user (`DataStart.app_id`; from an older
    gateway, the service user), never as root: the app's live tree is that
    user's (roost.datadir), and device files and ownership changes a client
    asks for (`-D`, `-o`, `-g` change rsync's
    wire format, so they cannot simply be dropped) are beyond their reach.
  - rsync options are a single cluster of short flags and long options
    that carry no path, except `--partial-dir`/`--backup-dir` with a safe
    relative one; `--munge-links` is always added, so a symlink a client
    uploads is stored inert and never followed.
  - scp takes only -t/-f/-r/-p/-d/-v/-q.
  - every path is relative, without `..`, and must resolve (symlinks
    followed) inside the app's directory, which is the working directory.

Sessions that may have written (rsync and scp receiving, sftp) bump the app's
data version when they end, so runners pull the new tree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
from pathlib import Path

from roost.servicehost.appdata import AppData
from roost.servicehost.names import BadAppName, check_app
from roost.servicehost.user import ServiceUser
from roost.sessions.server import ExecSessions, Spawn
from roost.tenant.identity import IdentityError, identity_for
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import (
    DataArchive,
    DataPull,
    DataStart,
    DataVersion,
    DataVersionReply,
    Error,
    Msg,
    Ok,
)

log = logging.getLogger("roost.servicehost")

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

_SHORT = re.compile(r"^-([A-Za-z]+)(e[.A-Za-z]*)?$")
_LONG = re.compile(r"^--([a-z][a-z0-9-]*)(=(.*))?$", re.S)
# Long options that name files or hosts, or make a root server dangerous.
_REFUSED_LONG = {
    "temp-dir", "log-file", "log-file-format", "files-from", "link-dest", "copy-dest",
    "compare-dest", "devices", "specials", "copy-devices", "write-devices", "super",
    "rsync-path", "config", "daemon", "write-batch", "only-write-batch", "read-batch",
    "address", "port", "sockopts", "password-file", "remote-option", "copy-links",
    "copy-dirlinks", "keep-dirlinks", "owner", "group", "chown", "usermap", "groupmap",
}  # fmt: skip
_PATH_LONG = {"partial-dir", "backup-dir"}
_SCP_FLAGS = {"-t", "-f", "-r", "-p", "-d", "-v", "-q"}


class Refused(Exception):
    pass


def safe_relative(path: str) -> str:
    """`path` as a relative path inside the data directory, or Refused."""
    if "\x00" in path or path.startswith("/"):
        raise Refused(f"path {path!r} must be relative to the app's data directory")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"path {path!r} leaves the app's data directory")
    rel = "/".join(parts)
    # Keep a trailing slash (rsync's "contents of"); never start with "-".
    tail = "/" if path.endswith("/") and rel else ""
    return f"./{rel}{tail}" if rel else "."


def rsync_options(options: list[str]) -> list[str]:
    out: list[str] = []
    shorts = 0
    for opt in options:
        m = _SHORT.match(opt)
        if m:
            shorts += 1
            out.append(opt)
            continue
        m = _LONG.match(opt)
        if not m:
            raise Refused(f"rsync option {opt!r} is not accepted")
        name, value = m.group(1), m.group(3)
        if name in _REFUSED_LONG or name in ("server", "sender", "munge-links"):
            raise Refused(f"rsync option --{name} is not accepted here")
        if name in _PATH_LONG:
            if value is None:
                raise Refused(f"--{name} needs a value")
            out.append(f"--{name}={safe_relative(value)}")
            continue
        if value is not None and ("/" in value or "\x00" in value):
            raise Refused(f"rsync option --{name} cannot name a path here")
        out.append(opt)
    if shorts > 1:
        raise Refused("rsync sent more than one option cluster")
    return out


def inside(root: Path, rel: str) -> bool:
    """Does root/rel resolve (symlinks followed) inside root? A missing tail
    is judged by its deepest existing ancestor."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, rel))
    return target == real_root or target.startswith(real_root + os.sep)


def build_argv(
    msg: DataStart,
    app_dir: Path,
    owner: tuple[int, int] | None = None,
    app_users: dict[str, int] | None = None,
) -> tuple[list[str], bool]:
    """(argv, may_write) for a DataStart; Refused when anything is off.

    For sftp `app_dir` is the root of all apps' directories, `owner` the
    (uid, gid) the server drops to once started (it must import as root),
    and `app_users` the uid each app's tree is reached as.
    """
    paths = [safe_relative(p) for p in msg.paths]
    for p in paths:
        if not inside(app_dir, p):
            raise Refused(f"path {p!r} leaves the app's data directory")
    if msg.tool == "rsync":
        sender = "--sender" in msg.options
        opts = rsync_options([o for o in msg.options if o != "--sender"])
        if not paths:
            raise Refused("rsync names no path")
        if not sender and len(paths) != 1:
            raise Refused("rsync can write to one destination only")
        argv = ["rsync", "--server", *(["--sender"] if sender else []), *opts, "--munge-links"]
        return [*argv, ".", *paths], not sender
    if msg.tool == "scp":
        bad = [o for o in msg.options if o not in _SCP_FLAGS]
        if bad:
            raise Refused(f"scp option {bad[0]!r} is not accepted")
        to = "-t" in msg.options
        if to == ("-f" in msg.options):
            raise Refused("scp needs exactly one of -t (upload) and -f (download)")
        if len(paths) != 1:
            raise Refused("scp takes one path")
        return ["scp", *msg.options, paths[0]], to
    if msg.tool == "sftp":
        apps = [check_app(a) for a in msg.apps]
        uid, gid = owner or (os.getuid(), os.getgid())
        server = [sys.executable, "-m", "roost.servicehost.sftpd", str(app_dir), str(uid), str(gid)]
        users = app_users or {}
        return [*server, *(f"{a}:{users[a]}" if a in users else a for a in apps)], True
    raise Refused(f"unknown tool {msg.tool!r}")


class DataSessions:
    def __init__(self, data: AppData, sessions: ExecSessions, user: ServiceUser) -> None:
        self.data = data
        self.sessions = sessions
        self.user = user

    def entries(self) -> list[Entry]:
        """Data sessions and pulls, for the servicehost's table: the session
        requests themselves are the exec sessions' own."""
        return [
            on(DataStart, refusing(self.start, Refused, BadAppName)),
            on(DataVersion, refusing(self.version, BadAppName)),
            on(DataPull, refusing(self.pull, BadAppName)),
            *self.sessions.entries(),
        ]

    async def version(self, msg: DataVersion) -> Msg:
        return DataVersionReply(app=msg.app, version=self.data.version(msg.app))

    async def pull(self, msg: DataPull) -> Msg:
        version = self.data.version(msg.app)
        if version == msg.have_version:
            return DataArchive(app=msg.app, version=version, unchanged=True)
        archive = await asyncio.to_thread(self.data.archive, msg.app)
        return DataArchive(app=msg.app, version=version, archive=archive)

    async def start(self, msg: DataStart) -> Msg:
        if self.sessions.has(msg.session):
            return Ok(detail=msg.session)  # a retried start
        users = app_users(msg) if self.user.dropped else {}
        if msg.tool == "sftp":
            for a in msg.apps:
                quota_mb = msg.data_quotas.get(a, 0)
                await asyncio.to_thread(self.data.dir, a, _pair(users.get(a)), quota_mb)
            cwd = self.data.root
        else:
            cwd = await asyncio.to_thread(
                self.data.dir, msg.app, _pair(users.get(msg.app)), msg.data_quota_mb
            )
        owner = (self.user.uid, self.user.gid) if self.user.dropped else None
        argv, may_write = build_argv(msg, cwd, owner, users)
        # The sftp server drops privileges itself, after its imports.
        drop = self.user.dropped and msg.tool != "sftp"
        run_as = _pair(users.get(msg.app)) or owner
        if not os.path.isabs(argv[0]) and shutil.which(argv[0]) is None:
            return Error(message=f"{argv[0]} is not installed on the servicehost")

        def ended(_status: int) -> None:
            if may_write:
                for app in msg.apps if msg.tool == "sftp" else [msg.app]:
                    self.data.bump(app)

        log.info("%s: %s session %s: %s", msg.app, msg.tool, msg.session, " ".join(argv))
        return await self.sessions.start(
            msg.session,
            Spawn(
                argv=argv,
                env={**BASE_ENV, "HOME": str(cwd)},
                cwd=cwd,
                on_exit=ended,
                user=run_as[0] if drop and run_as else None,
                group=run_as[1] if drop and run_as else None,
            ),
        )


def app_users(msg: DataStart) -> dict[str, int]:
    """The uid of each app the session reaches, whose user owns its tree
    (the same on every host: roost.tenant.identity). Apps the gateway sent
    no id for (an older gateway) are left to the tools' user."""
    ids = dict(msg.app_ids)
    if msg.app and msg.app_id > 0:
        ids[msg.app] = msg.app_id
    out = {}
    for app, app_id in ids.items():
        try:
            out[app] = identity_for(app_id, app).uid
        except IdentityError:
            continue
    return out


def _pair(uid: int | None) -> tuple[int, int] | None:
    return (uid, uid) if uid is not None else None  # a tenant's group has its uid's id
