"""Who a tenant process is: one Unix user and group per app, the same on every host.

ep.io's war story: files owned by bare UIDs that no `ls` could name. Each app
gets a system user whose uid is derived from the app's numeric id (a row of
the state database, never reused) in a range reserved for Roost, so every
host computes the same uid without asking anyone, a reused app *name* gets a
new uid (its predecessor's files are not its own), and firewall rules can
match all tenants by one uid range (`meta skuid`).

Two ranges: an app's instances, run sessions and cron jobs run as its
`app` identity; its build steps as its `build` identity, so code run at build
time (setup.py, collectstatic) cannot touch what the running app owns, and
one app's build cannot touch another's.

The ranges sit below 2**31 (some tools treat uids as signed) and far above
the usual system and login ranges and the subordinate-id ranges
(`/etc/subuid` starts at 100000 and grows by 65536 per user).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["app", "build"]

APP_UID_BASE = 1_900_000_000
BUILD_UID_BASE = 2_000_000_000
# Every tenant uid (both kinds) lies in [TENANT_UID_MIN, TENANT_UID_MAX].
TENANT_UID_MIN = APP_UID_BASE
TENANT_UID_MAX = BUILD_UID_BASE + 99_999_999
MAX_APP_ID = 99_999_999
# useradd's limit on a user name is 32 bytes.
_NAME_MAX = 32
_PREFIX: dict[Kind, str] = {"app": "a", "build": "b"}
_BASE: dict[Kind, int] = {"app": APP_UID_BASE, "build": BUILD_UID_BASE}
# Serialises useradd across the daemons of one host (runner and builder both
# create users); useradd takes its own lock too, but fails rather than waits.
_LOCK_PATH = Path("/run/lock/roost-tenant-users.lock")


class IdentityError(RuntimeError):
    """No identity could be made (a bad id, or the host refused the user)."""


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int


def identity_for(app_id: int, app_name: str, kind: Kind = "app") -> Identity:
    """The identity of `app_id` (pure: the same on every host)."""
    if not 0 < app_id <= MAX_APP_ID:
        raise IdentityError(f"app id {app_id} is outside 1..{MAX_APP_ID}")
    uid = _BASE[kind] + app_id
    return Identity(name=user_name(app_id, app_name, kind), uid=uid, gid=uid)


def user_name(app_id: int, app_name: str, kind: Kind = "app") -> str:
    """`a<id>-<app>` / `b<id>-<app>`, cut to useradd's limit.

    The id keeps names unique when an app name is reused; the app name is
    what a person reading `ls -l` wants to see. App names are already
    restricted to [a-z0-9-]; anything else is dropped here all the same.
    """
    safe = "".join(ch for ch in app_name.lower() if ch.isalnum() or ch == "-")
    return f"{_PREFIX[kind]}{app_id}-{safe}"[:_NAME_MAX].rstrip("-")


def is_tenant_uid(uid: int) -> bool:
    return TENANT_UID_MIN <= uid <= TENANT_UID_MAX


def ensure_identity(ident: Identity, home: str = "/nonexistent") -> Identity:
    """Make sure the host has a passwd and group entry for `ident` (as root).

    Idempotent. An entry with the same uid but another name (a name cut
    differently by an older version) is accepted: the uid is what matters.
    Refuses a uid held by a user outside the tenant range, or a name held by
    another uid.
    """
    if _matches(ident):
        return ident
    if os.geteuid() != 0:
        raise IdentityError("only root can create tenant users")
    _LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _matches(ident):
            return ident
        _run(
            shutil.which("groupadd") or "/usr/sbin/groupadd",
            "--gid", str(ident.gid), ident.name,
            ok=(0, 4, 9),  # 4: gid in use (ours, from a crashed run); 9: name in use
        )  # fmt: skip
        _run(
            shutil.which("useradd") or "/usr/sbin/useradd",
            "--uid", str(ident.uid), "--gid", str(ident.gid),
            "--no-create-home", "--home-dir", home,
            "--shell", "/usr/sbin/nologin", "--no-user-group",
            "--key", "UID_MIN=1", "--key", f"UID_MAX={TENANT_UID_MAX}",
            ident.name,
            ok=(0,),
        )  # fmt: skip
    if not _matches(ident):
        raise IdentityError(f"user {ident.name} ({ident.uid}) was not created")
    return ident


def _matches(ident: Identity) -> bool:
    try:
        by_uid = pwd.getpwuid(ident.uid)
    except KeyError:
        other: pwd.struct_passwd | None = None
        with contextlib.suppress(KeyError):
            other = pwd.getpwnam(ident.name)
        if other is not None:
            raise IdentityError(
                f"user name {ident.name} already belongs to uid {other.pw_uid}"
            ) from None
        return False
    if by_uid.pw_gid != ident.gid:
        raise IdentityError(f"uid {ident.uid} ({by_uid.pw_name}) has gid {by_uid.pw_gid}")
    with contextlib.suppress(KeyError):
        grp.getgrgid(ident.gid)
        return True
    return False


def _run(*argv: str, ok: tuple[int, ...]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        raise IdentityError(f"{Path(argv[0]).name} failed: {proc.stderr.strip()}")
