"""`roost controller|builder|runner|router|...`: run one role's daemon in the foreground."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from roost.cli.lazy import LazyGroup
from roost.daemonize import secure_start
from roost.proc.exits import ExitCode
from roost.settings import Settings


def _run(role: str, data: Path, module: str = "daemon", **kw: Any) -> None:
    # Before anything is opened or made: every role's files are its own.
    secure_start(data.resolve())
    try:
        settings = Settings.from_env(**kw.pop("overrides", {}))
    except ValueError as exc:  # a setting's value is not of its type
        click.echo(f"{role}: {exc}", err=True)
        raise SystemExit(ExitCode.CONFIG_ERROR) from None
    importlib.import_module(f"roost.{role}.{module}").run(data.resolve(), settings, **kw)


@click.command("controller")
@click.option("--name", default="controller", help="key name in DATA/keys")
@click.option("--api-port", type=int, default=None)
@click.option(
    "--state", "state_url", default=None, help="state database URL (default: SQLite in DATA)"
)
@click.pass_context
def controller(ctx: click.Context, name: str, api_port: int | None, state_url: str | None) -> None:
    """Run a controller (API, scheduler when it holds the lease)."""
    _run(
        "controller",
        ctx.obj["data"],
        name=name,
        state_url=state_url,
        overrides={"api_port": api_port},
    )


@click.command("builder")
@click.option("--name", default="builder")
@click.pass_context
def builder(ctx: click.Context, name: str) -> None:
    """Run a builder (and its image store)."""
    _run("builder", ctx.obj["data"], name=name)


@click.command("runner")
@click.option("--name", default="runner")
@click.pass_context
def runner(ctx: click.Context, name: str) -> None:
    """Run a runner: supervises this host's app instances."""
    _run("runner", ctx.obj["data"], name=name)


@click.command("router")
@click.option("--name", default="router")
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None)
# One worker of a router with several: its supervisor starts it so.
@click.option("--worker", type=int, default=None, hidden=True)
@click.pass_context
def router(
    ctx: click.Context, name: str, port: int | None, workers: int | None, worker: int | None
) -> None:
    """Run a router: the HTTP front end."""
    _run("router", ctx.obj["data"], name=name, port=port, workers=workers, worker=worker)


@click.group(
    "servicehost",
    cls=LazyGroup,
    lazy={"replace": "roost.cli.servicehosts:replace"},
    invoke_without_command=True,
)
@click.option("--name", default="servicehost")
@click.pass_context
def servicehost(ctx: click.Context, name: str) -> None:
    """Run a servicehost: PostgreSQL and Redis for the apps (`replace`: a
    lost one's place in its pairs taken by another)."""
    if ctx.invoked_subcommand is None:
        _run("servicehost", ctx.obj["data"], name=name)


@click.command("gateway")
@click.option("--name", default="gateway")
@click.option("--port", type=int, default=None, help="SSH port (default 2222)")
@click.pass_context
def gateway(ctx: click.Context, name: str, port: int | None) -> None:
    """Run a gateway: SSH for git push, run, rsync and scp."""
    _run("gateway", ctx.obj["data"], name=name, port=port)


@click.command("backupd")
@click.option("--name", default="backupd")
@click.pass_context
def backupd(ctx: click.Context, name: str) -> None:
    """Run a backupd: pulls backups, keeps them in two places, proves each by restoring it."""
    _run("backups", ctx.obj["data"], name=name)


@click.command("sentinel")
@click.pass_context
def sentinel(ctx: click.Context) -> None:
    """Run this host's Redis Sentinel alone: a cluster's third, beside a controller."""
    _run("servicehost", ctx.obj["data"], module="sentineld")


@click.command("statedb")
@click.pass_context
def statedb(ctx: click.Context) -> None:
    """Run this host's part of the state database: its etcd member, its Patroni."""
    _run("statedb", ctx.obj["data"])


@click.command("roles", hidden=True)
@click.argument("specs", nargs=-1, metavar="ROLE[=METRICS_PORT]...")
@click.pass_context
def roles(ctx: click.Context, specs: tuple[str, ...]) -> None:
    """Run several roles in one process (`roost up` with ROOST_ROLE_HOST=on:
    roost.cli.rolehost), each serving its metrics on its port."""
    from roost.cli.rolehost import Host, parse_specs

    try:
        parsed = parse_specs(list(specs))
    except ValueError as exc:
        click.echo(f"roles: {exc}", err=True)
        raise SystemExit(ExitCode.CONFIG_ERROR) from None
    Host(ctx.obj["data"].resolve(), parsed).run()
