"""Names and URLs of an app's services: pure functions, no I/O.

App names match ^[a-z0-9_-]+$ (the controller enforces it; we check again
because names become SQL identifiers and directory names here). PostgreSQL
identifiers cannot hold '-' unquoted, so the database and role of app
"my-app" are both `app_my_app`; two apps that differ only by '-' versus '_'
would collide, so the mapping is checked against the stored owner (see
`ServiceHost`). Identifiers are still always quoted when used in SQL.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from urllib.parse import quote

_APP = re.compile(r"^[a-z0-9_-]{1,48}$")
_RESTORE_ID = re.compile(r"^[a-z0-9]{1,16}$")
# A database name a restore may create (`--to`): unquoted-safe, lowercase.
_TARGET = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PG_NAME_MAX = 63  # PostgreSQL cuts longer identifiers (NAMEDATALEN - 1)
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
# What backupd logs in as: the PostgreSQL role and each Redis's ACL user.
BACKUP_ROLE = "roost_backup"
REDIS_BACKUP_USER = "roost-backup"


class BadName(ValueError):
    pass


class BadAppName(BadName):
    pass


def check_app(app: str) -> str:
    if not _APP.match(app):
        raise BadAppName(
            f"app name {app!r} is not valid (lowercase letters, digits, '-' and '_', "
            "at most 48 characters)"
        )
    return app


def pg_name(app: str) -> str:
    """The database and role name of `app` (both the same, which pg_hba's
    `sameuser` relies on)."""
    return "app_" + check_app(app).replace("-", "_")


def new_password() -> str:
    # URL-safe, so it needs no escaping in DATABASE_URL / REDIS_URL.
    return secrets.token_urlsafe(24)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def postgres_url(host: str, port: int, database: str, user: str, password: str) -> str:
    return (
        f"postgres://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{url_host(host)}:{port}/{quote(database, safe='')}"
    )


def redis_url(host: str, port: int, password: str, db: int = 0) -> str:
    return f"redis://:{quote(password, safe='')}@{url_host(host)}:{port}/{db}"


def check_restore_id(restore_id: str) -> str:
    if not _RESTORE_ID.match(restore_id):
        raise BadName(f"restore id {restore_id!r} is not valid ([a-z0-9], 1 to 16 characters)")
    return restore_id


def restore_db_name(database: str, tag: str, restore_id: str) -> str:
    """`<database>__<tag>_<id>` ("r": prepared for a restore; "pre": the data
    it replaced), within PostgreSQL's 63 bytes: a long database name is cut
    and a hash of it added, so two apps never share one."""
    suffix = f"__{tag}_{check_restore_id(restore_id)}"
    if len(database) + len(suffix) <= PG_NAME_MAX:
        return database + suffix
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    return f"{database[: PG_NAME_MAX - len(suffix) - 9]}_{digest}{suffix}"


def check_target(target: str, app_databases: Collection[str]) -> str:
    """A database name a restore may make (`--to`), or BadName saying why not.

    Never an app's database, nor one a future app would be given ("app_..."),
    nor PostgreSQL's own.
    """
    if not _TARGET.match(target):
        raise BadName(
            f"database name {target!r} is not valid (lowercase letters, digits and '_', "
            "not starting with a digit, at most 63 characters)"
        )
    if target in app_databases or target.startswith("app_"):
        raise BadName(f"database {target!r} is (or would be) an app's database: choose another")
    if target in RESERVED_DATABASES or "__r_" in target or "__pre_" in target:
        raise BadName(f"database name {target!r} is reserved: choose another")
    return target
