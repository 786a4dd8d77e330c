"""The environment an app's processes get for its services (pure).

Heroku/Dokku-style URLs (`DATABASE_URL`, `REDIS_URL`), the discrete
variables ep.io-era code reads (`POSTGRES_HOST`, ... , `REDIS_PASSWORD`) and
libpq's own (`PGHOST`, ...), so `psql` with no arguments inside `roost run`
opens the app's database. The controller calls this with the credentials it
stored; ep.io's `bundle_config` module is rendered from the URLs by the runner
(`roost.appspec.bundle_config.from_environment`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class CredentialFields(Protocol):
    """What this module reads of a service's credentials.

    The servicehost sends them as `roost.wire.messages.ServiceCredentials`,
    which has these fields. appspec sits below wire (it does no I/O and
    knows no transport), so it names the fields it needs instead of
    importing the message: the import would make wire and appspec import
    each other.
    """

    @property
    def kind(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def database(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def url(self) -> str: ...


# The services the platform gave an app, "HOST:PORT HOST:PORT" (IPv6 hosts in
# brackets): what runners' firewalls let the app's processes reach
# (roost.runner.firewall). Never taken from DATABASE_URL/REDIS_URL, which an
# app's config vars may point anywhere (at a platform port, say).
SERVICE_ADDRESSES = "ROOST_SERVICE_ADDRESSES"


def service_environment(creds: Iterable[CredentialFields]) -> dict[str, str]:
    env: dict[str, str] = {}
    for c in creds:
        if c.kind == "postgres":
            env |= {
                "DATABASE_URL": c.url,
                "POSTGRES_HOST": c.host,
                "POSTGRES_PORT": str(c.port),
                "POSTGRES_DATABASE": c.database,
                "POSTGRES_USERNAME": c.username,
                "POSTGRES_PASSWORD": c.password,
                "PGHOST": c.host,
                "PGPORT": str(c.port),
                "PGDATABASE": c.database,
                "PGUSER": c.username,
                "PGPASSWORD": c.password,
            }
        elif c.kind == "redis":
            env |= {
                "REDIS_URL": c.url,
                "REDIS_HOST": c.host,
                "REDIS_PORT": str(c.port),
                "REDIS_PASSWORD": c.password,
            }
    return env


def with_service_addresses(
    env: dict[str, str], creds: Iterable[CredentialFields]
) -> dict[str, str]:
    """`env` with SERVICE_ADDRESSES set from `creds` alone.

    Called last, after config vars are merged in: whatever a config var of
    that name said is replaced (or dropped, for an app with no services).
    """
    env.pop(SERVICE_ADDRESSES, None)
    addresses = sorted(
        {f"[{c.host}]:{c.port}" if ":" in c.host else f"{c.host}:{c.port}" for c in creds}
    )
    if addresses:
        env[SERVICE_ADDRESSES] = " ".join(addresses)
    return env
