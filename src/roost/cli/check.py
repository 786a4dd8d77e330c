"""`roost check [PATH]`: is this app deployable, and what would run?

Exit 0 when deployable, 1 when not (the errors say why). A user mistake never
prints a traceback. `render_report` is shared with `roost deploy`, which runs
the same check before uploading.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from roost.appspec.check import CheckReport, check_path
from roost.appspec.errors import Problem
from roost.appspec.model import AppSpec, ConfigWarning

EXIT_OK = 0
EXIT_NOT_DEPLOYABLE = 1
_HIDDEN = "***"


def _where(file: str, line: int) -> str:
    return f"{file}:{line}" if file and line else file


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _plan(console: Console, spec: AppSpec) -> None:
    processes = _table("Processes", "name", "runs", "cwd", "declared at")
    for proc in spec.processes.values():
        if proc.kind == "wsgi":
            runs = f"gunicorn {proc.entrypoint}"
            if proc.async_type:
                runs += f" ({proc.async_type} workers)"
        else:
            runs = proc.command
        name = f"{proc.name} (HTTP)" if proc.web and proc.name != "web" else proc.name
        processes.add_row(escape(name), escape(runs), escape(proc.cwd), escape(proc.source))
    if spec.predeploy_command:
        processes.add_row(
            "predeploy (once per deploy)", escape(spec.predeploy_command), ".", "app.json"
        )
    if spec.release_command:
        processes.add_row("release (once per deploy)", escape(spec.release_command), ".", "")
    if spec.postdeploy_command:
        processes.add_row(
            "postdeploy (after it serves)", escape(spec.postdeploy_command), ".", "app.json"
        )
    if processes.rows:
        console.print(processes)
    else:
        console.print("Processes: none (static files only)")
    if spec.static:
        static = _table("Static routes", "URL", "served from", "kind")
        for m in spec.static:
            where = m.path if m.root == "app" else f"<{m.root}>/{m.path}".rstrip("/")
            static.add_row(
                escape(m.url_prefix), escape(where), "file" if m.is_file else "directory"
            )
        console.print(static)
    services = list(spec.services)
    if "redis" in services and spec.redis_memory_mb:
        services[services.index("redis")] = f"redis ({spec.redis_memory_mb} MB)"
    console.print(f"Services: {escape(', '.join(services)) if services else 'none'}")
    if spec.cron:
        cron = _table("Cron jobs", "schedule", "command", "declared at")
        for job in spec.cron:
            # The overlap policy only when it is not the default (allow).
            when = job.schedule + (f" overlap={job.overlap}" if job.overlap != "allow" else "")
            cron.add_row(escape(when), escape(job.command), escape(job.source))
        console.print(cron)
    if spec.healthchecks:
        checks = _table("Health checks", "process", "GET", "expects", "timeout, tries, delay")
        for process_type, hc in spec.healthchecks.items():
            expects = f"{hc.status_min}-{hc.status_max}"
            if hc.content:
                expects += f" containing {hc.content!r}"
            timing = f"{hc.timeout:g} s, {hc.attempts} every {hc.interval:g} s"
            timing += f", after {hc.initial_delay:g} s"
            checks.add_row(escape(process_type), escape(hc.path), escape(expects), timing)
        console.print(checks)
    facts = [f"requirements: {spec.requirements or 'none'}"]
    if spec.python_version:
        facts.append(f"python: {spec.python_version} (from {spec.python_source})")
    else:
        facts.append("python: the builder's default (Roost's own version)")
    if spec.formation:
        facts.append("formation: " + ", ".join(f"{k}={v}" for k, v in spec.formation.items()))
    if spec.singletons:
        facts.append(
            "singletons (never two at once; the old one stops before the new starts): "
            + ", ".join(spec.singletons)
        )
    if spec.django is not None:
        facts.append(f"Django: base {spec.django.base}, settings {spec.django.settings_module}")
    if spec.env:
        facts.append("env: " + ", ".join(spec.env))
    if spec.basic_auth is not None:
        facts.append(f"basic auth: {', '.join(spec.basic_auth.users)} ({spec.basic_auth.realm})")
    if spec.checkout_name != "app":
        facts.append(f"checkout directory: {spec.checkout_name}")
    for fact in facts:
        console.print(escape(fact))


def _problems(console: Console, title: str, items: Sequence[Problem | ConfigWarning]) -> None:
    if not items:
        return
    table = _table(title, "where", "problem", "hint")
    for item in sorted(items, key=lambda p: (p.file, p.line)):
        table.add_row(escape(_where(item.file, item.line)), escape(item.message), escape(item.hint))
    console.print(table)


def render_report(console: Console, report: CheckReport) -> None:
    """Print a report as tables: the plan, then warnings, then errors."""
    files = ", ".join(report.files) or "no configuration"
    console.print(f"[bold]{escape(report.path)}[/bold] ({escape(files)})")
    if report.spec is not None:
        _plan(console, report.spec)
    _problems(console, "Warnings", report.warnings)
    _problems(console, "Errors", report.errors)
    if report.ok:
        console.print("[green]deployable[/green]")
    else:
        count = len(report.errors)
        console.print(f"[red]not deployable: {count} error{'s' if count != 1 else ''}[/red]")


def report_json(report: CheckReport) -> dict[str, Any]:
    """The report as JSON-ready data; basic-auth passwords are hidden."""
    spec: Any = None
    if report.spec is not None:
        spec = msgspec.to_builtins(report.spec)
        if spec.get("basic_auth"):
            spec["basic_auth"]["users"] = {u: _HIDDEN for u in spec["basic_auth"]["users"]}
    return {
        "ok": report.ok,
        "path": report.path,
        "files": report.files,
        "errors": msgspec.to_builtins(report.errors),
        "warnings": msgspec.to_builtins(report.warnings),
        "spec": spec,
    }


@click.command("check")
@click.argument("path", required=False, default=".", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def check(path: Path, as_json: bool) -> None:
    """Check an app directory (or one epio.ini, Procfile or app.json) before deploying it.

    Prints what would run (processes, static routes, services, cron jobs)
    and every warning; exits 1 with the errors when the app cannot be
    deployed.
    """
    try:
        report = check_path(path)
    except Exception as exc:  # a bug, not a user mistake: still no traceback
        message = f"internal error while checking {path}: {type(exc).__name__}: {exc}"
        report = CheckReport(path=str(path), errors=[Problem(message)])
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2))
    else:
        render_report(Console(), report)
    sys.exit(EXIT_OK if report.ok else EXIT_NOT_DEPLOYABLE)
