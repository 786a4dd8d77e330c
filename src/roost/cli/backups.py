"""`roost backups list|capture|restore|restore-host|policy`: backups kept and
proven by backupd.

A capture or a restore is one request answered when it is done (minutes
for a big app), so it is sent with a long read timeout.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from roost.cli.client import EXIT_ERROR, resolve
from roost.cli.manage import _app, json_option

console = Console()
# A capture or restore runs this long at most before the CLI stops waiting
# (the controller's own limits to backupd: 30 and 60 minutes).
LONG = httpx.Timeout(30.0, read=3700.0)
# A host restore: every app of a servicehost (the controller waits 6 hours).
HOST_LONG = httpx.Timeout(30.0, read=6 * 3600.0 + 100)
KINDS = ("pgdump", "redis", "data", "git")
STATE_STYLE = {"verified": "green", "taken": "yellow", "failed": "bold red", "skipped": "dim"}
HEALTH_STYLE = {"ok": "green", "pending": "yellow"}


def _api(ctx: click.Context) -> Any:
    return resolve(ctx.obj["data"])


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "-"


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def where(locations: dict[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(locations.items())) or "-"


def entries_table(
    entries: list[dict[str, Any]], with_app: bool, with_backupd: bool = False
) -> Table:
    cols = ["app"] if with_app else []
    table = Table()
    where_cols = ["backupd"] if with_backupd else []
    for col in (*cols, "id", "kind", "taken", "reason", "size", "state", *where_cols,
                "locations"):  # fmt: skip
        # An id is copied into `restore --id`: folded, never cut short.
        table.add_column(col, overflow="fold")
    for e in entries:
        style = STATE_STYLE.get(e["state"], "")
        state = f"[{style}]{e['state']}[/]" + (f": {e['message']}" if e["message"] else "")
        row = [e["app"] or "(platform)"] if with_app else []
        row += [
            e["id"], e["kind"], stamp(e["taken_at"]), e["reason"], size(e["size"]), state,
            *([e.get("backupd") or "-"] if with_backupd else []), where(e["locations"]),
        ]  # fmt: skip
        table.add_row(*row)
    return table


def say_health(h: dict[str, Any] | None, name: str) -> None:
    if h is None:
        console.print(f"{name}: no backups yet")
        return
    style = HEALTH_STYLE.get(h["state"], "bold red")
    extra = f" ({h['message']})" if h["message"] else ""
    console.print(f"{name}: [{style}]{h['state']}[/]{extra}")


def say_backupds(data: dict[str, Any]) -> bool:
    """A line for each backupd that did not answer (its backups are not in
    the list: said, never left out); whether there was one."""
    down = {n: s for n, s in data.get("backupds", {}).items() if s != "ok"}
    for name, state in down.items():
        console.print(f"[bold red]backupd {name}: {state}[/]")
    return bool(down)


def several(data: dict[str, Any]) -> bool:
    return len(data.get("backupds", {})) > 1


def not_configured(data: dict[str, Any]) -> None:
    """No backupd: said in red, and a failing exit (as for a red health), so
    a script watching backups does not take "none" for "fine"."""
    if not data.get("configured", True):
        console.print(f"[bold red]{data['message']}[/]")
        raise SystemExit(EXIT_ERROR)


@click.group("backups")
def backups() -> None:
    """Backups of an app's database, Redis, data and repository, proven by restoring them."""


@backups.command("list")
@click.argument("app", required=False)
@click.option("--all", "every", is_flag=True, help="every app's backups status (operators)")
@json_option
@click.pass_context
def backups_list(ctx: click.Context, app: str | None, every: bool, as_json: bool) -> None:
    """The app's backups, newest last, and its point-in-time window."""
    api = _api(ctx)
    if every:
        data = api.request("GET", "/api/backups")
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        not_configured(data)
        console.print(entries_table(data["entries"], with_app=True, with_backupd=several(data)))
        down = say_backupds(data)
        for h in data["health"]:
            say_health(h, h["app"] or "(platform)")
        if down or any(h["red"] for h in data["health"]):
            raise SystemExit(EXIT_ERROR)
        return
    name = _app(app)
    data = api.request("GET", f"/api/apps/{name}/backups")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    not_configured(data)
    console.print(entries_table(data["entries"], with_app=False, with_backupd=several(data)))
    say_backupds(data)
    windows = data.get("windows") or {}
    if len(windows) > 1:
        for backupd, w in windows.items():
            console.print(
                f"point in time on {backupd}: from {stamp(w['from'])} to {stamp(w['to'])}"
            )
    elif data["pitr"]["from"]:
        pitr = data["pitr"]
        console.print(f"point in time: from {stamp(pitr['from'])} to {stamp(pitr['to'])}")
    else:
        console.print("point in time: no window yet")
    say_health(data["health"], name)


@backups.command("capture")
@click.argument("app", required=False)
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="only these")
@click.option(
    "--platform",
    is_flag=True,
    help="the platform's own state and the databases' base backups instead (operators)",
)
@json_option
@click.pass_context
def backups_capture(
    ctx: click.Context, app: str | None, kinds: tuple[str, ...], platform: bool, as_json: bool
) -> None:
    """Back the app up now (kept until retention removes it); proven by a drill after."""
    started = time.monotonic()
    if platform:
        name = "the platform"
        data = _api(ctx).request("POST", "/api/backups", timeout=LONG)
    else:
        name = _app(app)
        data = _api(ctx).request(
            "POST", f"/api/apps/{name}/backups", json={"kinds": list(kinds)}, timeout=LONG
        )
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["entries"]:
        console.print(f"{name} has nothing to back up")
        return
    # Each backupd keeps its own: with several, each line says whose it is.
    on = len({e.get("backupd", "") for e in data["entries"]}) > 1
    for e in data["entries"]:
        whose = f" on {e['backupd']}" if on else ""
        if e["state"] == "skipped":
            console.print(f"{e['kind']}{whose}: skipped ({e['message']})")
            continue
        console.print(f"{e['kind']}: {e['id']}{whose} ({size(e['size'])}, {e['state']})")
    where = "--all" if platform else name
    console.print(
        f"backed up in {time.monotonic() - started:.0f} s; each is verified by restoring it "
        f"(roost backups list {where})"
    )


def _check_at(at: str) -> str:
    """Refuse a time that is not ISO 8601 to the second before asking anyone."""
    try:
        parsed = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{at!r} is not ISO 8601 (e.g. 2026-03-01T14:05:09Z)") from None
    if parsed.microsecond:
        raise click.BadParameter("give the time to the second")
    return at.strip()


@backups.command("restore")
@click.argument("app", required=False)
@click.option("--id", "backup_id", default="", help="the backup to restore (roost backups list)")
@click.option(
    "--at",
    default="",
    help="a time to restore the database to, ISO 8601 to the second (UTC unless an offset "
    "is given), within the point-in-time window",
)
@click.option(
    "--to", "to", default="", help="restore into this new database; the app's is left alone"
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@json_option
@click.pass_context
def backups_restore(
    ctx: click.Context, app: str | None, backup_id: str, at: str, to: str, yes: bool, as_json: bool
) -> None:
    """Restore a backup (--id) or a point in time (--at) into the app.

    The backup is loaded and checked beside the app's data first, while the
    app serves; a failure there leaves the app and its data as they were.
    Then, in place, the app shows its maintenance page, what is replaced is
    backed up and kept, and the data is swapped in.
    """
    if bool(backup_id) == bool(at):
        raise click.UsageError("give exactly one of --id and --at")
    if at:
        at = _check_at(at)
    name = _app(app)
    what = backup_id or f"its database as at {at}"
    if not yes and not to:
        click.confirm(
            f"Restore {name} to {what}? The app is suspended while its data is replaced; "
            "its current data is backed up first and kept",
            abort=True,
        )
    body = {"id": backup_id, "at": at, "to": to}
    data = _api(ctx).request("POST", f"/api/apps/{name}/backups/restore", json=body, timeout=LONG)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(data["message"])
    if data["safety_backup"]:
        click.echo(f"backup taken first: {data['safety_backup']}")
    if data["kept"]:
        click.echo(f"the replaced data is kept as {data['kept']}")
    if to and data["database"]:
        click.echo(f"restored into database {data['database']}")


@backups.command("restore-host")
@click.argument("host")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@json_option
@click.pass_context
def backups_restore_host(ctx: click.Context, host: str, yes: bool, as_json: bool) -> None:
    """Every app of a servicehost that lost its data, back onto it (operators).

    HOST must hold no app's service (started afresh, empty). It takes on the
    services it held, with the credentials the apps have, from the newest
    platform backup that recorded them; then each app's newest verified
    database, Redis and data directory backups are restored into them. Each
    app shows its maintenance page while its own data comes back and serves
    again when it all did; one that did not come back whole stays in
    maintenance until `roost resume --app APP`.
    """
    if not yes:
        click.confirm(
            f"Restore every app of servicehost {host} onto it? It must be empty (fresh); "
            "each app shows its maintenance page while its data comes back",
            abort=True,
        )
    data = _api(ctx).request("POST", f"/api/servicehosts/{host}/restore", timeout=HOST_LONG)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        console.print(f"{data['host']}: credentials from {data['platform_backup']}")
        for r in data["reports"]:
            mark = "[green]restored[/]" if r["ok"] else "[bold red]NOT restored[/]"
            from_ = f" from {r['backup_id']}" if r["backup_id"] else ""
            console.print(f"{r['app']} {r['kind']}{from_}: {mark}: {r['message']}")
        held = sorted({r["app"] for r in data["reports"] if not r["ok"]})
        if held:
            console.print(
                f"[bold red]in maintenance[/] until resumed (`roost resume --app APP`): "
                f"{', '.join(held)}"
            )
    if not data["ok"]:
        raise SystemExit(EXIT_ERROR)


@backups.command("policy")
@click.argument("app", required=False)
@click.option("--pitr-days", type=click.IntRange(1, 3650), default=7, show_default=True,
              help="days of point-in-time recovery")  # fmt: skip
@click.option("--daily", type=click.IntRange(1, 3650), default=30, show_default=True)
@click.option("--weekly", type=click.IntRange(0, 520), default=12, show_default=True)
@click.option("--monthly", type=click.IntRange(0, 1200), default=12, show_default=True)
@click.pass_context
def backups_policy(
    ctx: click.Context, app: str | None, pitr_days: int, daily: int, weekly: int, monthly: int
) -> None:
    """How much history backupd keeps of the app (applied by backupd only)."""
    name = _app(app)
    body = {"pitr_days": pitr_days, "daily": daily, "weekly": weekly, "monthly": monthly}
    _api(ctx).request("PUT", f"/api/apps/{name}/backups/policy", json=body)
    console.print(
        f"{name}: point in time for {pitr_days} days; the last {daily} daily, {weekly} weekly "
        f"and {monthly} monthly backups"
    )


COMMANDS = [backups]
