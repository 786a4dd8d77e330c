"""`roost status`: the local platform's roles, as `roost up` last wrote them."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from roost.cli.client import EXIT_ERROR, EXIT_NOT_FOUND, CliError
from roost.proc.upstate import NotReady, alive, last_words, load, wait_ready

console = Console()


@click.command("status")
@click.option(
    "--wait", is_flag=True, help="wait until every role is up; fail if roost up stops first"
)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="with --wait")
@click.option(
    "--pid",
    type=int,
    help="with --wait: the roost up to wait for (one just started, e.g. `roost up &` then "
    "--pid $!): until it writes its own status, one another roost up wrote does not count",
)
@click.pass_context
def status(ctx: click.Context, wait: bool, timeout: float, pid: int | None) -> None:
    """Each role `roost up` runs: up, starting or down, and what it last said.

    Exits 0 when the platform is ready (every role up), 1 when it is not.
    """
    data = ctx.obj["data"]
    waited = None
    if wait:
        try:
            waited = wait_ready(data, timeout, pid=pid)
        except NotReady as exc:
            raise CliError(str(exc), EXIT_ERROR) from None
    loaded = load(data)
    if loaded is None:
        raise CliError(f"no roost up has run on {data}", EXIT_NOT_FOUND)
    # What was waited for, not a status written since by another roost up.
    st = waited or loaded[0]
    running = alive(st.pid) and not st.over
    summary = "ready" if st.ready and running else "starting" if running else "not running"
    click.echo(f"roost up (pid {st.pid}) on {data}: {summary}")
    if st.error:
        click.echo(st.error)
    table = Table("role", "state", "pid", "restarts", "last error")
    for name, role in st.roles.items():
        table.add_row(
            name, role.state, str(role.pid or ""), str(role.restarts), last_words(role.last_error)
        )
    console.print(table)
    if not (st.ready and running):
        ctx.exit(EXIT_ERROR)
