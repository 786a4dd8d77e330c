"""The dashboard: one page, served by every controller replica, that logs in
with the same account and refreshes itself from `/api/dashboard`."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from roost.controller import pgwatch, redispair
from roost.controller.api.certs import cert_view
from roost.controller.api.deps import ApiError, CurrentAccount, CurrentController, app_for_member
from roost.controller.backups import health
from roost.controller.core import Controller
from roost.controller.deployflow import outcome, stage_of

router = APIRouter()


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard", include_in_schema=False)
async def page() -> HTMLResponse:
    html = resources.files("roost.controller.dashboard").joinpath("index.html").read_text()
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


# The page's own scripts and the vendored charting library: these names
# only, never a path from the request.
ASSETS = {
    "charts.js": "application/javascript",
    "actions.js": "application/javascript",
    "panel.css": "text/css",
    "vendor/uPlot.iife.min.js": "application/javascript",
    "vendor/uPlot.min.css": "text/css",
}


@router.get("/dashboard/{asset:path}", include_in_schema=False)
async def asset(asset: str) -> Response:
    kind = ASSETS.get(asset)
    if kind is None:
        raise ApiError(404, f"no dashboard file {asset}")
    body = resources.files("roost.controller.dashboard").joinpath(asset).read_bytes()
    return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})


@router.get("/api/apps/{name}/metrics")
async def app_metrics(
    name: str,
    who: CurrentAccount,
    c: CurrentController,
    window: Literal["hour", "day"] = "hour",
) -> dict[str, Any]:
    """An app's requests per second by status class, latency percentiles
    (ms), and memory (MB) and CPU (% of a core) per instance, one point per
    10 s over the last hour or per 5 min over the last day (null: nothing
    heard). Kept in memory by each controller (roost.controller.history)."""
    await app_for_member(c, who, name)
    return c.history.series(name, window, time.time())


@router.get("/api/dashboard")
async def overview(who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    """Everything the dashboard shows, in one response."""
    now = time.monotonic()
    statuses = c.soft.statuses()
    visible = None if who.is_admin else await c.store.apps_visible_to(who.id)
    hosts = []
    # The host list is the operators' (as /api/hosts): others see where their
    # own instances run, in each instance's row, and nothing of the rest.
    seen_hosts = sorted(c.soft.hosts.items()) if who.is_admin else []
    for host_id, seen in seen_hosts:
        hb = seen.heartbeat
        hosts.append(
            {
                "host_id": host_id,
                "hostname": hb.hostname,
                "state": "down" if seen.down_since is not None else "up",
                "heartbeat_age_s": round(now - seen.last_seen, 1),
                "memory_mb": hb.memory_mb,
                "cpus": hb.cpus,
                "instances": len(hb.instances),
            }
        )
    hostname = {h: s.heartbeat.hostname for h, s in c.soft.hosts.items()}
    placements = await c.store.placements()
    apps: list[dict[str, Any]] = []
    shown_apps = [a for a in await c.store.apps() if visible is None or a.id in visible]
    if c.services is not None:
        await c.services.warm(a.id for a in shown_apps)  # holders: one query
    for a in shown_apps:
        instances = []
        for p in placements:
            if p.app != a.name:
                continue
            st = statuses.get(p.instance_id)
            instances.append(
                {
                    "process": f"{p.process_type}.{p.idx}",
                    "release": p.release,
                    "host": hostname.get(p.host_id, p.host_id),
                    "state": st.state if st else "unknown",
                    "memory_mb": round(st.memory_mb, 1) if st else 0,
                    # Why it last stopped ("ran out of memory (limit 256 MB)..."), first line.
                    "last_error": st.last_error.split("\n", 1)[0] if st else "",
                }
            )
        deploys = [
            {
                "version": r.version,
                "status": r.status,
                "created_at": r.created_at,
                "description": r.description,
            }
            for r in (await c.store.releases(a.id))[:5]
        ]
        logs = [
            {"ts": r.ts, "process": r.process, "source": r.source, "line": r.line}
            for r in await c.store.logs(a.id, 0, 8)
        ]
        # The newest deploy: where it is, or how it ended.
        last = [
            {"status": stage_of(b.status).value, "outcome": outcome(b.status, b.error, b.release)}
            for b in await c.store.builds_of(a.id, 1)
        ]
        apps.append(
            {
                "name": a.name,
                "release": a.current_release,
                "suspended": a.suspended,
                "instances": sorted(instances, key=lambda i: str(i["process"])),
                "deploys": deploys,
                "last_deploy": last[0] if last else None,
                "logs": logs,
                "services": {
                    **service_view(c, a.name, await _holders(c, a.id)),
                    "replication": await replication_view(c, a.id, a.name),
                },
            }
        )
    backups = await backup_view(c, who.is_admin, {str(shown["name"]) for shown in apps})
    for shown in apps:
        shown["backups"] = backups["apps"].get(shown["name"])
    events = [
        {"ts": e.ts, "app": e.app, "kind": e.kind, "message": e.message}
        for e in await c.store.events(visible, 20)
    ]
    return {
        "account": who.email,
        "admin": who.is_admin,
        "hosts": hosts,
        "apps": apps,
        "events": events,
        "backups": backups,
        "certificates": await cert_view(c, visible),
        "controller": c.name,
    }


async def _holders(c: Controller, app_id: int) -> dict[str, str]:
    return await c.services.holders(app_id) if c.services is not None else {}


def service_view(c: Controller, app: str, holders: dict[str, str]) -> dict[str, list[str]]:
    """What the servicehosts last said of the app's services that someone
    should see: a Redis whose snapshots are off for lack of disk (red), and
    the data restores replaced, kept until purged; and which servicehost
    holds each service."""
    reports = list(c.services.status.values()) if c.services is not None else []
    problems = [
        f"{s.kind}: {s.snapshot_problem}"
        for st in reports
        for s in st.servers
        if s.app == app and s.snapshot_problem
    ]
    kept = [f"{k.kind} {k.name}" for st in reports for k in st.kept if k.app == app]
    held = [f"{kind} on {host or '(not known yet)'}" for kind, host in sorted(holders.items())]
    return {"problems": problems, "kept": kept, "held": held}


async def replication_view(c: Controller, app_id: int, app: str) -> list[str]:
    """The app's PostgreSQL pair and Redis pair: primary, standby, how far
    behind, what is wrong (none for services on one servicehost)."""
    out = []
    pair = await c.store.app_pair(app_id)
    if pair:
        out.append(pgwatch.health_of(c).shown(pair) or f"postgres pair {pair}: not looked at yet")
    reports = list(c.services.status.values()) if c.services is not None else []
    r = redispair.replication(reports, app, time.time())
    if r:
        line = f"redis: master {r['redis_master'] or 'none'}"
        if r["redis_replica"]:
            line += f", replica {r['redis_replica']} ({r['redis_lag_bytes']} B behind)"
        out.append(line + (f", {r['redis_problem']}" if r["redis_problem"] else ""))
    return out


async def backup_view(c: Controller, admin: bool, apps: set[str]) -> dict[str, Any]:
    """Each shown app's backup health (red when its newest backup or drill
    failed, or none was verified in 26 h), the platform's own for admins,
    and whether backupd answered: silence is shown, not taken for success."""
    if not c.backups.configured:
        return {"configured": False, "answered": False, "apps": {}, "platform": None,
                "backupds": {}}  # fmt: skip
    listing = await c.backups.overview()
    if listing is None:
        return {"configured": True, "answered": False, "apps": {}, "platform": None,
                "backupds": {}}  # fmt: skip
    shown: dict[str, Any] = {}
    platform = None
    for h in health(listing.entries, time.time()):
        row = {"state": h.state, "red": h.red, "verified_at": h.verified_at, "message": h.message}
        if h.app == "":
            platform = row if admin else None
        elif h.app in apps:
            shown[h.app] = row
    # Each backupd, and whether it answered: one down is shown (in red), even
    # while another holds every app's backups.
    return {"configured": True, "answered": True, "apps": shown, "platform": platform,
            "backupds": listing.status()}  # fmt: skip
