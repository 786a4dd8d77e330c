"""`roost servicehost replace OLD NEW`: a servicehost lost for good, another
in its place in every pair it was in (operators only; controller/replace.py)."""

from __future__ import annotations

from typing import Any

import click

# Each app's Redis on the pair is made again on NEW, one after the other.
REPLACE_TIMEOUT_S = 900.0


@click.command("replace")
@click.argument("old")
@click.argument("new")
# (roost.cli.manage, with rich, is imported when the command runs: `roost
# servicehost --help`, as a daemon's entry, lists this command without it.)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def replace(ctx: click.Context, old: str, new: str, as_json: bool) -> None:
    """NEW takes lost servicehost OLD's place: a new PostgreSQL standby and
    Redis replicas on NEW, streaming from the primaries (host ids as
    `roost hosts` and `roost services info` name them). Refused, nothing
    changed, while OLD still answers, or when NEW is unknown, already in a
    pair or holding services."""
    import httpx

    from roost.cli.manage import _api, _out

    data = _api(ctx).request(
        "POST",
        f"/api/servicehosts/{old}/replace",
        json={"new": new},
        timeout=httpx.Timeout(30.0, read=REPLACE_TIMEOUT_S),
    )

    def said(d: dict[str, Any]) -> None:
        click.echo(f"{d['new']} took {d['old']}'s place in pair(s) {', '.join(d['pairs'])}.")
        click.echo(
            "Patroni makes its PostgreSQL a standby of the primary "
            "(`roost services info APP postgres` shows it streaming)."
        )
        if d["redis_replicas"]:
            click.echo(f"Redis replicas made for: {', '.join(d['redis_replicas'])}")
        if d["rolled"]:
            click.echo(f"Fresh releases (their data proxies learn of it): {', '.join(d['rolled'])}")
        for problem in d["problems"]:
            click.echo(f"not done: {problem}", err=True)

    _out(data, as_json, said)
