"""The `roost` command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from roost import __version__
from roost.cli import (
    apps,
    backups,
    check,
    cluster,
    control,
    daemons,
    drains,
    hosts,
    manage,
    notify,
    restorecmd,
    services,
    status,
    up,
)
from roost.cli.datadir import default_data_dir
from roost.cli.install import install
from roost.cli.routerkeeper import router_keeper


@click.group()
@click.version_option(__version__, prog_name="roost")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: default_data_dir(os.geteuid(), os.environ),
    show_default="$ROOST_DATA, else /var/lib/roost as root, ./.roost otherwise",
    help="data directory of the local platform",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="ROOST_INSECURE",
    help="allow sending a token or password over plain HTTP to another machine",
)
@click.pass_context
def cli(ctx: click.Context, data: Path, insecure: bool) -> None:
    """Roost: a self-hosted platform for Python web sites and daemons."""
    ctx.ensure_object(dict)
    ctx.obj["data"] = data
    if insecure:
        # The API client reads it wherever a command builds one.
        os.environ["ROOST_INSECURE"] = "1"


cli.add_command(up.up)
cli.add_command(control.down)
cli.add_command(status.status)
cli.add_command(cluster.cluster)
cli.add_command(apps.apps_group)
cli.add_command(apps.deploy)
cli.add_command(apps.ps)
cli.add_command(apps.deploys)
cli.add_command(apps.releases)
cli.add_command(apps.logs)
cli.add_command(hosts.hosts)
for _cmd in (
    daemons.controller,
    daemons.builder,
    daemons.runner,
    daemons.router,
    daemons.servicehost,
    daemons.gateway,
    daemons.backupd,
    daemons.statedb,
    daemons.sentinel,
    *manage.COMMANDS,
    *services.COMMANDS,
    *backups.COMMANDS,
    *drains.COMMANDS,
    *notify.COMMANDS,
):
    cli.add_command(_cmd)

cli.add_command(check.check)
cli.add_command(restorecmd.restore)
cli.add_command(install)
cli.add_command(router_keeper)


def main() -> None:
    cli(prog_name="roost")
