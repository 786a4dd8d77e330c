"""`roost drains`: where an app's log lines are also sent; `roost log-retention`:
how much of them the built-in log store keeps."""

from __future__ import annotations

import time
from typing import Any

import click

from roost.cli.manage import _api, _out, _table, json_option


@click.group("drains")
def drains() -> None:
    """Log drains: an app's instance, router and platform lines also go to
    syslog (syslog://host:port over TCP, syslog+tls://host:port over TLS;
    RFC 5424, octet-counted) or HTTPS batches (https://..., as Heroku's)."""


@drains.command("add")
@click.argument("app")
@click.argument("url")
@click.pass_context
def add(ctx: click.Context, app: str, url: str) -> None:
    """Send APP's log lines to URL as well."""
    row = _api(ctx).request("POST", f"/api/apps/{app}/drains", json={"url": url})
    click.echo(f"drain {row['id']} added to {app}: {row['url']} (token {row['token']})")


@drains.command("list")
@click.argument("app")
@json_option
@click.pass_context
def list_(ctx: click.Context, app: str, as_json: bool) -> None:
    """APP's drains: delivered and dropped lines, and what last went wrong."""
    data = _api(ctx).request("GET", f"/api/apps/{app}/drains")
    _out(
        data,
        as_json,
        lambda d: _table(
            ["id", "url", "state", "delivered", "dropped", "last error"],
            [[r["id"], r["url"], r["state"], r["delivered"], r["dropped"], _error(r)] for r in d],
        ),
    )


def _error(r: dict[str, Any]) -> str:
    if not r["last_error"]:
        return ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_error_at"]))
    return f"{when} {r['last_error']}"


@drains.command("remove")
@click.argument("app")
@click.argument("drain_id", type=int)
@click.pass_context
def remove(ctx: click.Context, app: str, drain_id: int) -> None:
    """Stop sending APP's lines to drain DRAIN_ID."""
    _api(ctx).request("DELETE", f"/api/apps/{app}/drains/{drain_id}")
    click.echo(f"drain {drain_id} removed from {app}")


@click.command("log-retention")
@click.argument("app")
@click.option("--lines", type=int, default=None, help="keep the newest N lines")
@click.option("--days", type=float, default=None, help="keep lines younger than D days")
@click.option("--default", "to_default", is_flag=True, help="back to the platform's default")
@json_option
@click.pass_context
def log_retention(
    ctx: click.Context,
    app: str,
    lines: int | None,
    days: float | None,
    to_default: bool,
    as_json: bool,
) -> None:
    """Show or set how much of APP's log the built-in store keeps (`roost
    logs`): a line count (the platform's ROOST_LOG_LINES by default), an age
    in days (none by default), or both; a line goes when either says so.
    Setting one option leaves the other as it was."""
    api = _api(ctx)
    path = f"/api/apps/{app}/log-retention"
    if to_default:
        data = api.request("PUT", path, json={"lines": None, "days": None})
    elif lines is not None or days is not None:
        now = api.request("GET", path)
        body = {
            "lines": lines
            if lines is not None
            else (None if now["lines_default"] else now["lines"]),
            "days": days if days is not None else now["days"],
        }
        data = api.request("PUT", path, json=body)
    else:
        data = api.request("GET", path)
    _out(data, as_json, lambda d: click.echo(_said(app, d)))


def _said(app: str, d: dict[str, Any]) -> str:
    lines = f"{d['lines']} lines" + (" (the platform's default)" if d["lines_default"] else "")
    days = f"{d['days']:g} days" if d["days"] is not None else "no age limit"
    return f"{app} keeps {lines}, {days}"


COMMANDS = (drains, log_retention)
