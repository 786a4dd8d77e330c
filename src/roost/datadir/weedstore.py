"""The filers' metadata store in the state database's PostgreSQL.

Theory of operation. With a PostgreSQL state database the cluster's two
filers keep the tree's names in one `postgres2` store there (weedplan.py),
so the death of a filer's host loses nothing acknowledged: a create
returns once PostgreSQL committed it (synchronously on the standby under
Patroni), and the other filer reads the same rows. The store is a database
and role of its own (`roost_weed`), never the controllers' account: a
filer on a storage host holds its password and nothing that opens the
platform's state.

Pure: `store_for` turns the state URL `roost cluster init` was given into
the store's place with a fresh password; `statements` say what makes its
role and database. Patroni's bootstrap runs them (statedb/plan.py); with
`--state` the controller that runs a filer does at its start, through its
own state URL (roost.controller.filerstore: only the controller touches
the state database), which needs CREATEROLE and CREATEDB, else the
operator runs them. The filers wait meanwhile (restarted with backoff
until they connect).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from roost.datadir.weedplan import FilerStore, PlanError

NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PASSWORD = re.compile(r"[A-Za-z0-9_-]{16,}")
PG_DEFAULT_PORT = 5432


def store_for(state_url: str, token: Callable[[int], str] = secrets.token_urlsafe) -> FilerStore:
    """The filers' store on the state URL's PostgreSQL (PlanError when the
    URL names none: SQLite, or no host)."""
    # Parsed here, not by SQLAlchemy: only the controller imports it.
    try:
        url = urlsplit(state_url)
        port_in_netloc = url.port
    except ValueError as exc:
        raise PlanError(f"the state database URL: {exc}") from None
    if url.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise PlanError("the state database is not PostgreSQL")
    query = parse_qs(url.query)
    hosts_text = url.hostname or ",".join(query.get("host", []))
    hosts = [unquote(h) for h in hosts_text.split(",") if h]
    if not hosts or any(h.startswith("/") for h in hosts):
        raise PlanError("the state database URL names no PostgreSQL host the filers can reach")
    ports = {p for p in ",".join(query.get("port", [])).split(",") if p}
    if port_in_netloc is not None:
        ports = {str(port_in_netloc)}
    if len(ports) > 1:
        raise PlanError("the state database's hosts listen on different ports")
    try:
        port = int(ports.pop()) if ports else PG_DEFAULT_PORT
    except ValueError:
        raise PlanError("the state database URL's port is not a number") from None
    return FilerStore(hosts=[h.strip("[]") for h in hosts], port=port, password=token(24))


def statements(store: FilerStore) -> list[str]:
    """What makes the store's role and database (for the log and the docs)."""
    if not NAME.fullmatch(store.user) or not NAME.fullmatch(store.database):
        raise PlanError(f"the filer store's names must match {NAME.pattern}")
    if not PASSWORD.fullmatch(store.password):
        raise PlanError("the filer store's password must be URL-safe base64")
    return [
        f"CREATE ROLE {store.user} LOGIN PASSWORD '{store.password}'",
        f"CREATE DATABASE {store.database} OWNER {store.user}",
    ]
