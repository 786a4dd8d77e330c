"""`roost notify`: where alerts go (webhooks, e-mail), and what became of them."""

from __future__ import annotations

import time
from typing import Any

import click

from roost.cli.manage import _api, _out, _table, json_option


@click.group("notify")
def notify() -> None:
    """Alerts: deploys started, succeeded, failed or rolled back; instances
    crash-looping or killed out of memory; hosts down or up; certificates
    issued or failing; backups or restore drills failed; disks nearly full.
    A target is a webhook (http(s)://..., a signed JSON POST) or e-mail
    (mailto:a@b through the platform's SMTP server, or
    smtp://[user:pass@]host[:port]/a@b through another)."""


@notify.command("add")
@click.argument("url")
@click.option("--app", default=None, help="only this app's alerts (default: the whole platform's)")
@click.option(
    "--secret",
    default="",
    help="HMAC-SHA256 key: webhooks carry X-Hub-Signature-256 as GitHub's do",
)
@click.pass_context
def add(ctx: click.Context, url: str, app: str | None, secret: str) -> None:
    """Send alerts to URL (of APP, or platform-wide: operators only)."""
    row = _api(ctx).request("POST", "/api/notify", json={"url": url, "app": app, "secret": secret})
    whose = f"{row['app']}'s" if row["app"] else "the platform's"
    click.echo(f"notification target {row['id']} added: {whose} alerts go to {row['url']}")


@notify.command("list")
@click.option("--app", default=None, help="only this app's targets")
@json_option
@click.pass_context
def list_(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """Targets, their deliveries (pending, delivered, failed) and last error."""
    data = _api(ctx).request("GET", "/api/notify", params={"app": app} if app else None)
    _out(
        data,
        as_json,
        lambda d: _table(
            ["id", "app", "url", "state", "pending", "delivered", "failed", "last error"],
            [
                [
                    r["id"],
                    r["app"] or "(platform)",
                    r["url"],
                    r["state"],
                    r["pending"],
                    r["delivered"],
                    r["failed"],
                    _error(r),
                ]
                for r in d
            ],
        ),
    )


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _error(r: dict[str, Any]) -> str:
    return f"{_when(r['last_at'])} {r['last_error']}" if r["last_error"] else ""


@notify.command("remove")
@click.argument("target_id", type=int)
@click.pass_context
def remove(ctx: click.Context, target_id: int) -> None:
    """Stop sending alerts to target TARGET_ID (its pending deliveries go too)."""
    _api(ctx).request("DELETE", f"/api/notify/{target_id}")
    click.echo(f"notification target {target_id} removed")


@notify.command("log")
@click.option("--app", default=None, help="only this app's targets")
@click.option("--target", "target_id", type=int, default=None, help="only this target")
@click.option("-n", "limit", type=int, default=50, show_default=True, help="deliveries shown")
@json_option
@click.pass_context
def log(
    ctx: click.Context, app: str | None, target_id: int | None, limit: int, as_json: bool
) -> None:
    """The newest deliveries: the alert, its state, tries and last error."""
    params: dict[str, Any] = {"limit": limit}
    if app:
        params["app"] = app
    if target_id is not None:
        params["target"] = target_id
    data = _api(ctx).request("GET", "/api/notify/log", params=params)
    _out(
        data,
        as_json,
        lambda d: _table(
            ["id", "target", "when", "event", "app", "message", "state", "tries", "last error"],
            [
                [
                    r["id"],
                    r["target"],
                    _when(r["ts"]),
                    r["event"],
                    r["app"] or "",
                    r["message"],
                    _state(r),
                    r["attempts"],
                    r["last_error"],
                ]
                for r in d
            ],
        ),
    )


def _state(r: dict[str, Any]) -> str:
    if r["state"] == "pending" and r["attempts"]:
        return f"retry at {_when(r['next_at'])}"
    return str(r["state"])


COMMANDS = (notify,)
