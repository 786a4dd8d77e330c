"""Names and URLs of an app's services: pure functions, no I/O.

App names match ^[a-z0-9_-]+$ (the controller enforces it; we check again
because names become SQL identifiers and directory names here). PostgreSQL
identifiers cannot hold '-' unquoted, so the database and role of app
"my-app" are both `app_my_app`; two apps that differ only by '-' versus '_'
would collide, so the mapping is checked against the stored owner (see
`ServiceHost`). Identifiers are still always quoted when used in SQL.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote

_APP = re.compile(r"^[a-z0-9_-]{1,48}$")


class BadAppName(ValueError):
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
