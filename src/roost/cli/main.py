"""The `roost` command.

Its commands are imported only when invoked (roost.cli.lazy): a daemon started
as `roost <role>` imports its role and not the rest of the CLI (issue 21).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from roost import __version__
from roost.cli.datadir import default_data_dir
from roost.cli.lazy import LazyGroup

# httpx's package imports its own command-line tool (click, rich, pygments:
# ~5 MB resident for the life of a process) whenever rich is installed, as it
# is for this CLI. No roost process runs httpx's tool: marked absent before
# anything imports httpx, httpx does what it does without its [cli] extra.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

_DAEMONS = ("controller", "builder", "runner", "router", "servicehost", "gateway", "backupd")

# name -> "module:attribute", the command's home.
COMMANDS: dict[str, str] = {
    **{role: f"roost.cli.daemons:{role}" for role in (*_DAEMONS, "statedb", "sentinel", "roles")},
    "up": "roost.cli.up:up",
    "down": "roost.cli.control:down",
    "status": "roost.cli.status:status",
    "cluster": "roost.cli.cluster:cluster",
    "apps": "roost.cli.apps:apps_group",
    "deploy": "roost.cli.apps:deploy",
    "ps": "roost.cli.apps:ps",
    "deploys": "roost.cli.apps:deploys",
    "releases": "roost.cli.apps:releases",
    "logs": "roost.cli.apps:logs",
    "hosts": "roost.cli.hosts:hosts",
    **{
        name: f"roost.cli.manage:{name}"
        for name in (
            "login",
            "accounts",
            "config",
            "scale",
            "restart",
            "rollback",
            "suspend",
            "resume",
            "domains",
            "certs",
            "keys",
            "where",
        )
    },
    "services": "roost.cli.services:services",
    "data": "roost.cli.dataquota:data",
    "psql": "roost.cli.services:psql",
    "redis-cli": "roost.cli.services:redis_cli",
    "backups": "roost.cli.backups:backups",
    "drains": "roost.cli.drains:drains",
    "log-retention": "roost.cli.drains:log_retention",
    "notify": "roost.cli.notify:notify",
    "check": "roost.cli.check:check",
    "restore": "roost.cli.restorecmd:restore",
    "install": "roost.cli.install:install",
    "router-keeper": "roost.cli.routerkeeper:router_keeper",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
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


def main() -> None:
    cli(prog_name="roost")
