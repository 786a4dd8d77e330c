"""`roost services ...`, `roost psql`, `roost redis-cli`."""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from roost.cli.client import EXIT_ERROR, CliError, resolve
from roost.cli.manage import _app, app_option, json_option

console = Console()


def _api(ctx: click.Context) -> Any:
    return resolve(ctx.obj["data"])


@click.group("services")
def services() -> None:
    """Databases as services: PostgreSQL and Redis."""


@services.command("list")
@app_option
@json_option
@click.pass_context
def services_list(ctx: click.Context, app_name: str | None, as_json: bool) -> None:
    """The app's services."""
    rows = _api(ctx).request("GET", f"/api/apps/{_app(app_name)}/services")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("service", "host", "port", "database", "servicehost")
    for r in rows:
        # (the servicehost holding the data: absent from an older controller's answer)
        table.add_row(r["kind"], r["host"], str(r["port"]), r["database"], r.get("holder", ""))
    console.print(table)


@services.command("add")
@click.argument("kind", type=click.Choice(["postgres", "redis", "s3"]))
@click.option("--memory", "memory_mb", type=int, default=0, help="Redis memory limit in MB")
@app_option
@click.pass_context
def services_add(ctx: click.Context, kind: str, memory_mb: int, app_name: str | None) -> None:
    """Provision a service; the app restarts with its credentials."""
    data = _api(ctx).request(
        "POST", f"/api/apps/{_app(app_name)}/services", json={"kind": kind, "memory_mb": memory_mb}
    )
    console.print(f"Provisioned {kind} at {data['host']}:{data['port']}")


@services.command("remove")
@click.argument("kind", type=click.Choice(["postgres", "redis", "s3"]))
@app_option
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@json_option
@click.pass_context
def services_remove(
    ctx: click.Context, kind: str, app_name: str | None, yes: bool, as_json: bool
) -> None:
    """Take a final backup, then drop the service's data."""
    name = _app(app_name)
    if not yes:
        # A bucket's objects are deleted too (its final backup: a tar.gz of them all).
        what = "Its bucket and every object in it are" if kind == "s3" else "Its data is"
        click.confirm(f"Remove {kind} from {name}? {what} dropped after a final backup", abort=True)
    data = _api(ctx).request("DELETE", f"/api/apps/{name}/services/{kind}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    # Plain echo: a path must not be wrapped across lines.
    click.echo(f"Removed {kind}; final backup: {data['backup']}")


LIMIT_KEYS = (
    "connection_limit",
    "connections",
    "memory_limit_bytes",
    "memory_used_bytes",
    "eviction_policy",
    "snapshot_problem",
    "kept",
    "pg_pair",
    "pg_primary",
    "pg_standby",
    "pg_lag_bytes",
    "pg_problem",
    "standby",
    "quota_bytes",
    "used_bytes",
)
EVICTION = {
    "volatile-lru": "when full, keys with a TTL are evicted, least recently used first",
    "allkeys-lru": "when full, any key may be evicted, least recently used first",
    "noeviction": "when full, writes are refused",
}


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"


def pg_pair_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """An app's PostgreSQL on a servicehost pair (a cluster): which servicehost
    has the primary, which the standby, how far behind, and what is wrong,
    in red; none for a database on one servicehost."""
    if "pg_pair" not in data:
        return []
    lag = int(data.get("pg_lag_bytes", -1))
    lines = [
        ("pair", escape(str(data["pg_pair"]))),
        ("primary", escape(str(data.get("pg_primary", ""))) or "[bold red]none[/]"),
        ("standby", escape(str(data.get("pg_standby", ""))) or "[bold red]none[/]"),
        ("replication", f"{lag} bytes behind" if lag >= 0 else "lag unknown"),
    ]
    problem = str(data.get("pg_problem", ""))
    if problem:
        lines.append(("problem", f"[bold red]{escape(problem)}[/]"))
    return lines


def limit_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The service's limits and use as (label, text) lines; none when not reported."""
    lines = pg_pair_lines(data)
    if "standby" in data:
        lines.append(("standby", str(data["standby"]) or "none (one servicehost holds it)"))
    if "connection_limit" in data:
        limit = int(data["connection_limit"])
        cap = "no limit" if limit < 0 else f"at most {limit}"
        lines.append(("connections", f"{data.get('connections', 0)} open, {cap}"))
    if "memory_limit_bytes" in data:
        used, limit = int(data.get("memory_used_bytes", 0)), int(data["memory_limit_bytes"])
        lines.append(("memory", f"{_mb(used)} used of {_mb(limit)} (maxmemory)"))
        policy = str(data.get("eviction_policy", ""))
        lines.append(("eviction", f"{policy}: {EVICTION.get(policy, 'see the Redis manual')}"))
    if "snapshot_problem" in data:
        # Red: the disk has no room for this server's snapshots; someone must act.
        problem = str(data["snapshot_problem"])
        lines.append(("snapshots", f"[bold red]{escape(problem)}[/]" if problem else "on"))
    if "quota_bytes" in data:  # the data directory (roost.datadir.quota)
        used, quota = int(data.get("used_bytes", 0)), int(data["quota_bytes"])
        text = f"{_mb(used)} used of {_mb(quota)}" if quota else "no quota (a plain directory)"
        lines.append(("quota", text))
    for k in data.get("kept", []):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(k["kept_at"])))
        lines.append(("kept", f"{escape(str(k['name']))}: what a restore replaced, since {when}"))
    return lines


@services.command("info")
@click.argument("kind", type=click.Choice(["postgres", "redis", "s3", "data"]))
@app_option
@json_option
@click.pass_context
def services_info(ctx: click.Context, kind: str, app_name: str | None, as_json: bool) -> None:
    """Connection details (including the password), limits and use."""
    data = _api(ctx).request("GET", f"/api/apps/{_app(app_name)}/services/{kind}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for k, v in data.items():
        if k not in LIMIT_KEYS and k not in REDIS_PAIR_KEYS:
            console.print(f"[bold]{k}[/]: {v}")
    for label, text in limit_lines(data) + redis_pair_lines(data):
        console.print(f"[bold]{label}[/]: {text}")


REDIS_PAIR_KEYS = ("redis_master", "redis_replica", "redis_lag_bytes", "redis_problem")


def redis_pair_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """An app's Redis pair (a cluster): which copy is master, which replica,
    how far behind, and what is wrong, in red; none for a Redis alone."""
    if "redis_master" not in data:
        return []
    lines = [
        ("master", str(data["redis_master"]) or "[bold red]none[/]"),
        ("replica", str(data.get("redis_replica", "")) or "[bold red]none[/]"),
        ("replication", f"{int(data.get('redis_lag_bytes', 0))} bytes behind"),
    ]
    problem = str(data.get("redis_problem", ""))
    if problem:
        lines.append(("problem", f"[bold red]{escape(problem)}[/]"))
    return lines


def _exec_client(program: str, argv: list[str], env: dict[str, str]) -> None:
    path = shutil.which(program)
    if path is None:
        package = "postgresql-client" if program == "psql" else "redis-tools"
        raise CliError(f"{program} is not installed here (apt-get install {package})", EXIT_ERROR)
    os.execvpe(path, [program, *argv], {**os.environ, **env})


@click.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("app", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def psql(ctx: click.Context, app: str | None, args: tuple[str, ...]) -> None:
    """Open psql on the app's database (extra arguments go to psql)."""
    c = _api(ctx).request("GET", f"/api/apps/{_app(app)}/services/postgres")
    env = {
        "PGHOST": c["host"],
        "PGPORT": str(c["port"]),
        "PGDATABASE": c["database"],
        "PGUSER": c["username"],
        "PGPASSWORD": c["password"],
    }
    _exec_client("psql", list(args), env)


@click.command("redis-cli", context_settings={"ignore_unknown_options": True})
@click.argument("app", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def redis_cli(ctx: click.Context, app: str | None, args: tuple[str, ...]) -> None:
    """Open redis-cli on the app's Redis (extra arguments go to redis-cli)."""
    c = _api(ctx).request("GET", f"/api/apps/{_app(app)}/services/redis")
    _exec_client(
        "redis-cli",
        ["-h", c["host"], "-p", str(c["port"]), *args],
        {"REDISCLI_AUTH": c["password"]},
    )


COMMANDS = [services, psql, redis_cli]
