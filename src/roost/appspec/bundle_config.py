"""The `bundle_config` module that apps written for ep.io import their credentials from.

ep.io apps do `from bundle_config import config` and read:
    config['core']     data_directory, version (and app_id)
    config['postgres'] host, port, username, password, database
    config['redis']    host, port, password
    config['s3']       endpoint_url, bucket, access_key, secret_key, region (Roost's,
                       for `[services] s3 = true`; not ep.io's)
A service's key is present only when the app has that service, as on ep.io
(apps test `'postgres' in config`). Ports are ints; apps that wrote
`int(config['postgres']['port'])` keep working.

The runner renders the module per release from the credentials the
servicehost injected (DATABASE_URL, REDIS_URL: `from_environment`) and puts
its directory first on PYTHONPATH (`runtime.RuntimeVars.bundle_config_dir`)
for web processes, daemons, cron jobs and `run` alike. This module only
builds the text; it writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

Value = str | int | bool | None
BundleConfig = dict[str, dict[str, Value]]

_DEFAULT_PORTS = {"postgres": 5432, "redis": 6379}


def postgres_from_url(url: str) -> dict[str, Value]:
    """postgres://user:pass@host:5432/db -> config['postgres']."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or _DEFAULT_PORTS["postgres"],
        "username": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")),
    }


def redis_from_url(url: str) -> dict[str, Value]:
    """redis://:pass@host:6379/0 -> config['redis'] (plus the database number)."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/")
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or _DEFAULT_PORTS["redis"],
        "password": unquote(parts.password or ""),
        "db": int(db) if db.isdigit() else 0,
    }


def build_config(
    *,
    data_directory: str,
    version: str | int,
    app_id: str = "",
    postgres: Mapping[str, Value] | None = None,
    redis: Mapping[str, Value] | None = None,
    s3: Mapping[str, Value] | None = None,
) -> BundleConfig:
    config: BundleConfig = {
        "core": {"data_directory": data_directory, "version": version, "app_id": app_id}
    }
    if postgres is not None:
        config["postgres"] = dict(postgres)
    if redis is not None:
        config["redis"] = dict(redis)
    if s3 is not None:
        config["s3"] = dict(s3)
    return config


def s3_from_environment(env: Mapping[str, str]) -> dict[str, Value] | None:
    """config['s3'] from the AWS variables the platform sets (None without a bucket)."""
    endpoint, bucket = env.get("AWS_S3_ENDPOINT_URL"), env.get("AWS_STORAGE_BUCKET_NAME")
    if not endpoint or not bucket:
        return None
    return {
        "endpoint_url": endpoint,
        "bucket": bucket,
        "access_key": env.get("AWS_ACCESS_KEY_ID", ""),
        "secret_key": env.get("AWS_SECRET_ACCESS_KEY", ""),
        "region": env.get("AWS_DEFAULT_REGION", ""),
    }


def from_environment(
    env: Mapping[str, str], *, data_directory: str, version: str | int, app_id: str = ""
) -> BundleConfig:
    """The config for an app whose services are described by DATABASE_URL / REDIS_URL."""
    database_url = env.get("DATABASE_URL")
    redis_url = env.get("REDIS_URL")
    return build_config(
        data_directory=data_directory,
        version=version,
        app_id=app_id,
        postgres=postgres_from_url(database_url) if database_url else None,
        redis=redis_from_url(redis_url) if redis_url else None,
        s3=s3_from_environment(env),
    )


def _literal(value: object) -> str:
    # Only types whose repr is valid Python 2 and 3 source (apps from the ep.io
    # era may still run on either). bool before int: bool is an int.
    if value is None or isinstance(value, bool | str):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"bundle_config values must be str, int, bool or None, not {type(value)}")


def render_bundle_config(config: Mapping[str, Mapping[str, Value]]) -> str:
    """The source of bundle_config.py defining `config` as a plain dict."""
    lines = [
        "# -*- coding: utf-8 -*-",
        '"""Service credentials for this app, written by Roost for each release.',
        "",
        "Usage (as on ep.io): from bundle_config import config; config['postgres']['host']",
        '"""',
        "",
        "config = {",
    ]
    for section, values in config.items():
        lines.append(f"    {_literal(section)}: {{")
        lines.extend(f"        {_literal(k)}: {_literal(v)}," for k, v in values.items())
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"
