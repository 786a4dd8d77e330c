"""An app's directories belong to one incarnation of its name.

Theory of operation: app names are reused (delete `shop`, create `shop`
again), and every role keeps per-app directories named after the app: the
gateway's git cache, the runner's app home and data copy, the servicehost's
canonical data. Each such directory carries a marker file holding the app
key it was made for ("<app id>-<creation time in ms>", AppRemoved's
docstring says why not the id alone). Two events act on it:

  - the app is deleted (AppRemoved, or a sweep finding the name gone): a
    directory of that incarnation, or one without a marker, is moved into
    the role's archive;
  - the role is asked to use the app under a key (an assignment, a git
    push): a directory marked with another key is archived first, so a
    role that was down during the delete never hands a new app the old
    one's files. A directory without a marker predates markers and is
    adopted (the key is written), so upgrading never strands a live app.

The archive is `<role root>/archive/APP.KEY.STAMP[-N][suffix]`, on the same
file system as the directories (a move is a rename; across a mount of it,
a copy), private to the daemon;
entries older than ROOST_ARCHIVE_DAYS by their stamp are removed. Names are
parsed back strictly, so nothing else that might sit there is ever removed.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger("roost.appdirs")

MARKER = ".roost-app-key"
_KEY = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")
_APP = re.compile(r"^[a-z0-9_-]{1,64}$")
_ENTRY = re.compile(
    r"^(?P<app>[a-z0-9_-]{1,64})\.(?P<key>[0-9]{1,19}-[0-9]{1,19}|unkeyed)"
    r"\.(?P<stamp>[0-9]{8}T[0-9]{6}Z)(-[0-9]{1,6})?(?P<suffix>\.[a-z]{1,8})?"
    # A copy aside a crash cut short (_copy_aside) ages out like its entry.
    r"(\.partial)?$"
)
_STAMP = "%Y%m%dT%H%M%SZ"

Verdict = Literal["keep", "adopt", "archive"]


class BadKey(ValueError):
    pass


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise BadKey(f"invalid app key {key!r}")
    return key


def check_app(app: str) -> str:
    if not _APP.fullmatch(app):
        raise BadKey(f"invalid app name {app!r}")
    return app


def on_use(marker: str | None, key: str) -> Verdict:
    """What to do with an existing directory before the app `key` uses it."""
    if not key or marker == key:
        return "keep"
    if marker is None:
        return "adopt"
    return "archive"


def on_removed(marker: str | None, key: str) -> Verdict:
    """What to do with an existing directory when the app `key` was deleted.

    One marked with another key belongs to a newer app of the same name (a
    removal that arrives late, or twice): it stays.
    """
    return "archive" if marker is None or marker == key else "keep"


def read_key(directory: Path) -> str | None:
    try:
        text = (directory / MARKER).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text if _KEY.fullmatch(text) else None


def write_key(directory: Path, key: str) -> None:
    path = directory / MARKER
    tmp = directory / f"{MARKER}.tmp"
    tmp.write_text(check_key(key) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def archive(directory: Path, root: Path, app: str, key: str, now: float, suffix: str = "") -> Path:
    """Move `directory` into the archive `root`; where it went."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = f"{check_app(app)}.{check_key(key) if key else 'unkeyed'}"
    base += "." + time.strftime(_STAMP, time.gmtime(now))
    dest = root / f"{base}{suffix}"
    n = 1
    while dest.exists():
        dest = root / f"{base}-{n}{suffix}"
        n += 1
    try:
        os.rename(directory, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Another mount of the same file system: the servicehost's appdata
        # root is bound on itself (roost.datadir.quota.share_root), and
        # rename(2) does not cross mounts. Copied as it is, then removed.
        _copy_aside(directory, dest)
    log.info("%s: %s archived as %s", app, directory, dest)
    return dest


def _copy_aside(directory: Path, dest: Path) -> None:
    partial = dest.with_name(dest.name + ".partial")
    r = subprocess.run(
        ["cp", "-a", "--no-dereference", "--", str(directory), str(partial)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise OSError(errno.EXDEV, f"cp {directory}: {r.stderr.strip()}")
    os.rename(partial, dest)
    if directory.is_dir() and not directory.is_symlink():
        shutil.rmtree(directory)
    else:
        directory.unlink()


def use(
    directory: Path, root: Path, app: str, key: str, now: float, suffix: str = ""
) -> Path | None:
    """Make `directory` (created if missing) the one of app incarnation `key`.

    Returns the archive entry when a stale directory was moved aside first.
    """
    moved = None
    if key:
        check_key(key)
    if directory.is_dir():
        marker = read_key(directory)
        verdict = on_use(marker, key)
        if verdict == "keep":
            return None
        if verdict == "adopt" or only_marker(directory):
            write_key(directory, key)  # nothing of another app's in it
            return None
        moved = archive(directory, root, app, marker or "", now, suffix)
    directory.mkdir(parents=True, exist_ok=True)
    if key:
        write_key(directory, key)
    return moved


def remove(
    directory: Path, root: Path, app: str, key: str, now: float, suffix: str = ""
) -> Path | None:
    """Archive `directory` if it is app incarnation `key`'s; the entry, or None."""
    check_key(key)
    if not directory.is_dir() or only_marker(directory):
        return None  # nothing there, or already archived (a marked, empty home)
    if on_removed(read_key(directory), key) == "keep":
        return None
    return archive(directory, root, app, key, now, suffix)


def only_marker(directory: Path) -> bool:
    """Whether `directory` holds nothing but (at most) its marker."""
    try:
        return set(os.listdir(directory)) <= {MARKER}
    except (FileNotFoundError, NotADirectoryError):
        return False


def expired(name: str, keep_s: float, now: float) -> bool:
    """Whether archive entry `name` is older than `keep_s` (False: not one of ours)."""
    m = _ENTRY.fullmatch(name)
    if m is None:
        return False
    try:
        made = calendar.timegm(time.strptime(m["stamp"], _STAMP))
    except ValueError:
        return False
    return now - made > keep_s


def purge(root: Path, keep_s: float, now: float) -> list[str]:
    """Remove archive entries older than `keep_s`; their names. Blocking: run in a thread."""
    gone = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(root)):
            if not expired(entry, keep_s, now):
                continue
            path = root / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if not path.exists():
                gone.append(entry)
                log.info("archive %s removed (older than %.1f days)", path, keep_s / 86400)
    return gone
