"""User commands: apps, deploy, deploys, ps, releases, logs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from roost.cli.archive import pack
from roost.cli.client import EXIT_ERROR, CliError, resolve
from roost.proc.upstate import DOWN_HERE, down_report

console = Console()
err = Console(stderr=True)


def _api(ctx: click.Context) -> Any:
    return resolve(ctx.obj["data"])


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def app_name_for(directory: Path, explicit: str | None) -> str:
    """--app, else .roost-app, else ep.io's .epio-app in the directory."""
    if explicit:
        return explicit
    for name in (".roost-app", ".epio-app"):
        f = directory / name
        if f.is_file():
            value = f.read_text().strip()
            if value:
                return value
    raise CliError(
        f"which app? pass --app NAME or write the name into {directory / '.roost-app'}", 2
    )


@click.group("apps")
def apps_group() -> None:
    """Create, list and delete apps."""


@apps_group.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def apps_create(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create an app."""
    app = _api(ctx).request("POST", "/api/apps", json={"name": name})
    if as_json:
        _emit_json(app)
    else:
        console.print(f"Created [bold]{app['name']}[/]: {app['url']}")


@apps_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def apps_list(ctx: click.Context, as_json: bool) -> None:
    """List your apps."""
    apps = _api(ctx).request("GET", "/api/apps")
    if as_json:
        _emit_json(apps)
        return
    table = Table("name", "release", "state", "url")
    for a in apps:
        rel = f"v{a['current_release']}" if a["current_release"] else "-"
        table.add_row(a["name"], rel, "suspended" if a["suspended"] else "running", a["url"])
    console.print(table)


@apps_group.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def apps_info(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one app."""
    info = _api(ctx).request("GET", f"/api/apps/{name}")
    if as_json:
        _emit_json(info)
        return
    for k, v in info.items():
        console.print(f"[bold]{k}[/]: {v}")


@apps_group.command("delete")
@click.argument("name")
@click.pass_context
def apps_delete(ctx: click.Context, name: str) -> None:
    """Delete an app, its releases and its instances."""
    _api(ctx).request("DELETE", f"/api/apps/{name}")
    console.print(f"Deleted {name}")


@click.command("deploy")
@click.argument(
    "directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--app", "app_name", help="app to deploy to (default: .roost-app / .epio-app)")
@click.pass_context
def deploy(ctx: click.Context, directory: Path, app_name: str | None) -> None:
    """Upload DIRECTORY, build it and roll it out; streams the build log."""
    # Imported here, not with the module: roost.appspec's parsers are half
    # the CPU of a `roost ps`, `logs` or `apps` run (0.06 of 0.12 s), which
    # never check an app.
    from roost.appspec.check import check_app
    from roost.cli.check import render_report

    name = app_name_for(directory, app_name)
    # The same check the builder runs, before anything is uploaded.
    report = check_app(directory)
    if not report.ok:
        render_report(err, report)
        raise CliError(
            f"{directory} cannot be deployed: fix the errors above (roost check {directory})",
            EXIT_ERROR,
        )
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning.message}")
    api = _api(ctx)
    archive = pack(directory)
    chunk = 64 * 1024
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task(f"uploading {name}", total=len(archive))

        def body() -> Any:
            for i in range(0, len(archive), chunk):
                piece = archive[i : i + chunk]
                progress.advance(task, len(piece))
                yield piece

        started = api.request(
            "POST",
            f"/api/apps/{name}/builds",
            content=body(),
            headers={"Content-Type": "application/gzip"},
        )
    build_id = started["build_id"]
    err.print(f"build {build_id}")
    final: dict[str, Any] = {}
    for item in api.stream_lines(f"/api/builds/{build_id}/stream"):
        if "line" in item:
            click.echo(item["line"])
        elif "status" in item:
            final = item
    if not final.get("live"):
        # A role that is down on this machine is the likely cause: say which, and why.
        said = final.get("outcome") or "failed: the stream ended before the deploy did"
        down = "" if DOWN_HERE in said else down_report(ctx.obj["data"])
        raise CliError(f"deploy {said}{down}", EXIT_ERROR)
    console.print(f"[green]Deployed {name} v{final.get('release')}[/]")


@click.command("ps")
@click.option("--app", "app_name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ps(ctx: click.Context, app_name: str | None, as_json: bool) -> None:
    """Instances of an app: state, host, port, memory, process type, command."""
    api = _api(ctx)
    name = app_name_for(Path("."), app_name)
    rows = api.request("GET", f"/api/apps/{name}/ps")
    if as_json:
        _emit_json(rows)
        return
    table = Table("process", "release", "state", "host", "port", "memory", "restarts", "command")
    errors: list[tuple[str, str]] = []
    for r in rows:
        table.add_row(
            r["process"],
            f"v{r['release']}",
            r["state"],
            r["host"] + (" (drained)" if r.get("host_drained") else ""),
            str(r["port"] or "-"),
            f"{r['memory_mb']:.0f}/{r.get('memory_limit_mb', 0) or '?'} MB",
            str(r["restarts"]),
            r["command"][:60],
        )
        if r.get("last_error"):
            errors.append((r["process"], str(r["last_error"]).splitlines()[0]))
    console.print(table)
    for process, error in errors:  # e.g. "ran out of memory (limit 256 MB)"
        console.print(f"{escape(process)}: last stopped: {escape(error)}")
    try:
        data = api.request("GET", f"/api/apps/{name}/services/data")
    except CliError:
        return  # a controller that reports no data directory: nothing to add
    line = data_line(data)
    if line:
        console.print(line)


def data_line(data: dict[str, Any]) -> str:
    """The data directory's use under its quota, as `roost ps` ends ("" with
    no quota: a plain directory has no size to show against)."""
    quota = int(data.get("quota_bytes", 0))
    if not quota:
        return ""
    used = int(data.get("used_bytes", 0))
    full = " [bold red](full: writes fail with ENOSPC)[/]" if used >= quota else ""
    return f"data: {used / (1 << 20):.1f} MB used of {quota / (1 << 20):.1f} MB{full}"


@click.command("releases")
@click.option("--app", "app_name")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--lock", "show_lock", is_flag=True, help="print each release's pinned dependency lock"
)
@click.pass_context
def releases(ctx: click.Context, app_name: str | None, as_json: bool, show_lock: bool) -> None:
    """Releases of an app, newest first."""
    rows = _api(ctx).request("GET", f"/api/apps/{app_name_for(Path('.'), app_name)}/releases")
    if as_json:
        _emit_json(rows)
        return
    table = Table("version", "status", "image", "created", "description")
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        table.add_row(
            f"v{r['version']}", r["status"], r["image_digest"][:19], created, r["description"]
        )
    console.print(table)
    if show_lock:
        for r in rows:
            console.print(f"[bold]v{r['version']} lock[/]\n{r['lock']}")


@click.group("deploys", invoke_without_command=True)
@click.option("--app", "app_name")
@click.option("-n", "count", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def deploys(ctx: click.Context, app_name: str | None, count: int, as_json: bool) -> None:
    """An app's deploys, newest first: the stage each is at, or how it ended
    (`queued`: waiting for the app's earlier deploy to end)."""
    if ctx.invoked_subcommand is not None:
        return
    name = app_name_for(Path("."), app_name)
    rows = _api(ctx).request("GET", f"/api/apps/{name}/builds", params={"n": count})
    if as_json:
        _emit_json(rows)
        return
    table = Table("build", "stage", "release", "started", "took", "")
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        took = f"{r['finished_at'] - r['created_at']:.0f}s" if r["finished_at"] else "-"
        release = f"v{r['release']}" if r["release"] else "-"
        table.add_row(r["build_id"], r["status"], release, started, took, escape(r["outcome"]))
    console.print(table)


@deploys.command("cancel")
@click.argument("build_id")
@click.pass_context
def cancel_deploy(ctx: click.Context, build_id: str) -> None:
    """Cancel a deploy: a queued one at once, one under way at its next stage
    (a release rolling out fails; the release serving keeps serving)."""
    row = _api(ctx).request("POST", f"/api/builds/{build_id}/cancel")
    click.echo(f"deploy {row['build_id']} ({row['app']}): {row['outcome']}")


@click.command("logs")
@click.option("--app", "app_name")
@click.option("-n", "lines", default=100, show_default=True)
@click.option("-f", "--follow", is_flag=True)
@click.option("--process", default=None)
@click.pass_context
def logs(
    ctx: click.Context, app_name: str | None, lines: int, follow: bool, process: str | None
) -> None:
    """Show (and follow) an app's log stream."""
    name = app_name_for(Path("."), app_name)
    params: dict[str, Any] = {"n": lines, "follow": follow}
    if process:
        params["process"] = process
    for item in _api(ctx).stream_lines(f"/api/apps/{name}/logs", params=params):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(item["ts"]))
        click.echo(f"{ts} {item['source']}[{item['process']}]: {item['line']}")
