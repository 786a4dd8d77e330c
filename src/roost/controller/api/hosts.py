"""Hosts: the platform's map, and drains (controller/hostdrain.py). Operators only."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from roost.controller.api.deps import ApiError, CurrentAccount, CurrentController, require_admin

router = APIRouter(prefix="/api")


@router.get("/hosts")
async def hosts(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    # Every host, its addresses and load: the platform's map, not an app's.
    require_admin(who, "the host list")
    drains = {r.host_id: r for r in await c.store.host_drains()}
    out = []
    for host_id, seen in sorted(c.soft.hosts.items()):
        hb = seen.heartbeat
        drain = drains.get(host_id)
        out.append(
            {
                "host_id": host_id,
                "hostname": hb.hostname,
                "state": "down" if seen.down_since is not None else "up",
                "addresses": hb.addresses,
                "memory_mb": hb.memory_mb,
                "cpus": hb.cpus,
                "instances": len(hb.instances),
                # Its runner's release ("": 0.1.0), and how long ago its last
                # beat came: `roost cluster upgrade` waits for a new one.
                "release": hb.release,
                "seen_s_ago": round(max(0.0, time.monotonic() - seen.last_seen), 3),
                # Drained: no new placements, its instances moving elsewhere;
                # the note says what keeps the drain from ending.
                "drained": drain is not None,
                "drain_note": drain.note if drain is not None else "",
            }
        )
    return out


@router.post("/hosts/{host_id}/drain")
async def drain(host_id: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    """Move the host's instances elsewhere (each replacement up before its
    original stops) and place nothing new there, until undrained."""
    require_admin(who, "draining a host")
    if host_id not in c.soft.hosts and host_id not in {r.id for r in await c.store.hosts()}:
        raise ApiError(404, f"no host {host_id}")
    changed = await c.store.drain_host(host_id)
    c.wake.set()
    seen = c.soft.hosts.get(host_id)
    return {
        "host_id": host_id,
        "drained": True,
        "changed": changed,
        "instances": len(seen.heartbeat.instances) if seen is not None else 0,
    }


@router.delete("/hosts/{host_id}/drain")
async def undrain(host_id: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    """End a drain: the host takes placements again (nothing moves back)."""
    require_admin(who, "undraining a host")
    changed = await c.store.undrain_host(host_id)
    c.wake.set()
    return {"host_id": host_id, "drained": False, "changed": changed}
