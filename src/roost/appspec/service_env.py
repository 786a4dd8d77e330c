"""The environment an app's processes get for its services (pure).

Heroku/Dokku-style URLs (`DATABASE_URL`, `REDIS_URL`), the AWS variables
django-storages and boto3 read for an S3 bucket (`AWS_S3_ENDPOINT_URL`, ...:
boto3 itself does not read the endpoint, django-storages does), the discrete
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
        elif c.kind == "s3":
            env |= s3_environment(c)
    return env


# SeaweedFS ignores the region, but every S3 client signs with one.
S3_REGION = "us-east-1"


def s3_environment(c: CredentialFields) -> dict[str, str]:
    """An S3 bucket's variables: `database` is the bucket, `username` and
    `password` the access and secret key, `url` the endpoint. Path-style
    addressing: the endpoint is an address, not a domain with a bucket's
    subdomains (django-storages' AWS_S3_ADDRESSING_STYLE)."""
    return {
        "AWS_ACCESS_KEY_ID": c.username,
        "AWS_SECRET_ACCESS_KEY": c.password,
        "AWS_STORAGE_BUCKET_NAME": c.database,
        "AWS_S3_ENDPOINT_URL": c.url,
        "AWS_ENDPOINT_URL_S3": c.url,  # botocore's own name (1.31+): boto3 alone finds it
        "AWS_S3_ADDRESSING_STYLE": "path",
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_S3_REGION_NAME": S3_REGION,
        "S3_BUCKET": c.database,
    }


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
