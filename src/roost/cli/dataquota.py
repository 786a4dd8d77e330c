"""`roost data quota`: an app's own size for its data directory (issue 17).

    roost data quota --app APP            what it has and stores
    roost data quota 2G --app APP         its own size (instances restart onto it)
    roost data quota --reset --app APP    the platform's size again

A size is refused before anything changes when it is not one, or is below
what the app stores; more room than it has is for admins to give.
"""

from __future__ import annotations

import json
from typing import Any

import click

from roost.cli.client import EXIT_USAGE, CliError
from roost.cli.manage import _api, _app, app_option, json_option
from roost.datadir import quotasize


@click.group("data")
def data() -> None:
    """The app's data directory."""


@data.command("quota")
@click.argument("size", required=False)
@click.option("--reset", is_flag=True, help="use the platform's quota (ROOST_DATA_QUOTA_MB)")
@app_option
@json_option
@click.pass_context
def quota(
    ctx: click.Context, size: str | None, reset: bool, app_name: str | None, as_json: bool
) -> None:
    """Show or set the app's data quota: roost data quota 2G (K, M, G, T; MiB bare)."""
    if size is not None and reset:
        raise CliError("give a SIZE or --reset, not both", EXIT_USAGE)
    path = f"/api/apps/{_app(app_name)}/data/quota"
    if size is not None:
        try:
            quotasize.parse_mb(size)  # said here, before a request; the API checks again
        except quotasize.BadSize as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        shown = _api(ctx).request("PUT", path, json={"size": size})
    elif reset:
        shown = _api(ctx).request("DELETE", path)
    else:
        shown = _api(ctx).request("GET", path)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    else:
        click.echo(render(shown))


def render(d: dict[str, Any]) -> str:
    """One line: the quota, whose it is, and the use under it."""
    effective, own = int(d.get("effective_mb", 0)), d.get("quota_mb")
    used = quotasize.human(int(d.get("used_bytes", 0)))
    if not effective:
        return f"{d['app']}: no data quota ({used} stored)"
    whose = "its own" if own else "the platform's"
    size = quotasize.human(effective * quotasize.MB)
    return f"{d['app']}: data quota {size} ({whose}), {used} stored"
