"""`roost hosts`: the cluster's hosts; `drain` and `undrain` one (operators only)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Console

from roost.cli import upgradeplan as plan
from roost.cli.client import CliError
from roost.cli.manage import _api, _out, _table, json_option

console = Console()
LOOK_EVERY_S = 0.5


@click.group("hosts", invoke_without_command=True)
@json_option
@click.pass_context
def hosts(ctx: click.Context, as_json: bool) -> None:
    """Hosts of the cluster as the controllers see them."""
    if ctx.invoked_subcommand is not None:
        return
    data = _api(ctx).request("GET", "/api/hosts")
    _out(
        data,
        as_json,
        lambda d: _table(
            ["host", "hostname", "state", "addresses", "memory", "cpus", "instances", "drain"],
            [
                [
                    h["host_id"],
                    h["hostname"],
                    h["state"],
                    ",".join(h["addresses"]),
                    f"{h['memory_mb']} MB",
                    h["cpus"],
                    h["instances"],
                    _drain_cell(h),
                ]
                for h in d
            ],
        ),
    )


def _drain_cell(h: dict[str, Any]) -> str:
    if not h.get("drained"):
        return ""
    return f"drained: {h['drain_note']}" if h.get("drain_note") else "drained"


def seen_drain(rows: list[dict[str, Any]], host: str, now: float) -> plan.DrainSeen | None:
    """`host`'s row of /api/hosts as upgradeplan.drain_verdict takes it."""
    for row in rows:
        if row.get("host_id") == host:
            return plan.DrainSeen(
                drained=bool(row.get("drained")),
                instances=int(row.get("instances", 0)),
                note=str(row.get("drain_note", "")),
                beat_at=now - float(row.get("seen_s_ago", 1e9)),
            )
    return None


def wait_drained(
    list_hosts: Any, host: str, since: float, timeout_s: float, say: Any = None
) -> plan.Verdict:
    """Look at /api/hosts (`list_hosts()`) until `host` holds no instance or
    `timeout_s` passed; `say(why)` each time what it waits for changes."""
    deadline = time.monotonic() + timeout_s
    said = ""
    while True:
        now = time.monotonic()
        verdict = plan.drain_verdict(seen_drain(list_hosts(), host, now), since, now, deadline)
        if verdict.state != "waiting":
            return verdict
        if say is not None and verdict.why != said:
            say(verdict.why)
            said = verdict.why
        time.sleep(LOOK_EVERY_S)


@hosts.command("drain")
@click.argument("host")
@click.option("--wait", is_flag=True, help="return once the host holds no instance")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="with --wait")
@click.pass_context
def drain(ctx: click.Context, host: str, wait: bool, timeout: float) -> None:
    """Move HOST's instances elsewhere and place nothing new there.

    Each instance's replacement starts on another host and serves before the
    original stops (singletons stop first); an instance with nowhere to go
    stays, and `roost hosts` says so."""
    api = _api(ctx)
    since = time.monotonic()
    r = api.request("POST", f"/api/hosts/{host}/drain")
    already = "" if r["changed"] else " (it already was)"
    console.print(f"{host} drained{already}: its {r['instances']} instance(s) move elsewhere")
    if not wait:
        return
    verdict = wait_drained(
        lambda: api.request("GET", "/api/hosts"),
        host,
        since,
        timeout,
        lambda why: console.print(f"{host}: {why}"),
    )
    if verdict.state != "healthy":
        raise CliError(f"{host} is not empty after {timeout:.0f} s: {verdict.why}")
    console.print(f"{host} holds no instance")


@hosts.command("undrain")
@click.argument("host")
@click.pass_context
def undrain(ctx: click.Context, host: str) -> None:
    """End HOST's drain: it takes placements again (nothing moves back)."""
    r = _api(ctx).request("DELETE", f"/api/hosts/{host}/drain")
    console.print(f"{host} undrained" if r["changed"] else f"{host} was not drained")
