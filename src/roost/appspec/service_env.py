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

from roost.wire.messages import ServiceCredentials


def service_environment(creds: Iterable[ServiceCredentials]) -> dict[str, str]:
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
