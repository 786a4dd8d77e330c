"""Unprivileged system users that daemons run untrusted or dropped work as
(the builder's `roost-build`, the servicehost's `roost-services`)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from roost.proc.exits import ConfigError


class SystemUserError(RuntimeError):
    pass


class Unreachable(ConfigError):
    """A dropped user cannot walk down to the directory it must work in: a
    configuration error (the daemon exits CONFIG_ERROR; `roost up` stops)."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    # True when children actually switch to this user (we are root).
    dropped: bool


def ensure_system_user(name: str) -> Account:
    """The named system user, created when missing (as root); when not root,
    the current user, with `dropped` False: there is nothing to switch to."""
    if os.geteuid() != 0:
        return Account(pwd.getpwuid(os.geteuid()).pw_name, os.geteuid(), os.getegid(), False)
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode not in (0, 9):  # 9: created meanwhile by someone else
            raise SystemUserError(f"cannot create user {name!r}: {proc.stderr.strip()}") from None
        pw = pwd.getpwnam(name)
    if pw.pw_uid == 0:
        raise SystemUserError(f"user {name!r} is root")
    return Account(name, pw.pw_uid, pw.pw_gid, True)


def check_reachable(user: str, uid: int, path: Path) -> None:
    """Raise Unreachable unless `uid` can walk down to `path`: every directory
    on the way (that it does not own) must be searchable by others."""
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == uid:
            continue
        if not st.st_mode & stat.S_IXOTH:
            raise Unreachable(
                f"user {user!r} cannot reach {path}: {parent} is not searchable by others "
                f"(chmod o+x {parent}, or put the data directory elsewhere)"
            )


def chown_tree(root: Path, uid: int, gid: int, *, include_root: bool = True) -> None:
    """Give a tree to `uid`:`gid`; no link is followed, even if the tree
    changes meanwhile.

    Trees given this way are written by tenants (an app's data directory
    while its other instances run, a build's workspace), as root: a
    directory swapped for a link to /etc, or to another app's data, between
    listing it and changing what is in it, would make a path-based chown
    change what the link points at. So each directory is opened once
    (os.fwalk checks that what it opened is what it listed, and descends
    into no link), and each entry is changed relative to its directory's
    descriptor without following a link. Entries already owned are left
    (no write, no ctime change); one removed meanwhile is skipped.
    """
    if include_root:
        os.lchown(root, uid, gid)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if st.st_uid != uid or st.st_gid != gid:
                    os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
