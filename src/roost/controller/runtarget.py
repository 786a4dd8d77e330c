"""Where a one-off command of an app runs (`ssh run`, cron, the release
phase): a live runner that offers exec sessions, preferably one already
running the app's release or holding its image (unpacked, or copied there),
with the release's environment."""

from __future__ import annotations

import secrets
from collections.abc import Collection

from roost.appspec.model import AppSpec
from roost.controller.core import Controller
from roost.controller.store import AppRow
from roost.wire.messages import InstanceAssignment, RunTarget


class NoTarget(Exception):
    pass


async def run_target(c: Controller, app: AppRow, purpose: str = "run") -> RunTarget:
    if app.current_release is None:
        raise NoTarget(f"{app.name} has no release yet: deploy it first")
    rel = await c.release_row(app.id, app.current_release)
    return await target_for(
        c, app, rel.version, rel.image_digest, rel.spec, rel.config, purpose=purpose
    )


async def target_for(
    c: Controller,
    app: AppRow,
    release: int,
    image_digest: str,
    spec: AppSpec,
    config: dict[str, str],
    purpose: str,
    prefer: Collection[str] = (),
) -> RunTarget:
    """A runner for a command of `app` in `image_digest` with `spec` and
    `config` (the release phase: an image no release uses yet). Hosts in
    `prefer` (holding the image), else hosts running the release, come first."""
    if c.services is not None:  # instance_env reads them from its cache
        await c.services.warm([app.id])
    candidates = [
        s.heartbeat
        for s in c.soft.alive_hosts()
        if s.heartbeat.rpc_endpoint and s.heartbeat.rpc_key
    ]
    if not candidates:
        raise NoTarget("no runner host is available to run commands")
    warm = [
        hb
        for hb in candidates
        if hb.host_id in prefer
        or any(st.app == app.name and st.release == release for st in hb.instances)
    ]
    pool = warm or candidates
    host = pool[secrets.randbelow(len(pool))]
    assignment = InstanceAssignment(
        instance_id=f"{app.name}-{purpose}-{secrets.token_hex(4)}",
        app=app.name,
        release=release,
        image_digest=image_digest,
        process_type=purpose,
        spec=spec,
        env=c.instance_env(app.id, config),
        app_key=app.key,
        app_id=app.id,
        memory_mb=c.settings.instance_memory_mb,
        data_proxy=list(c.data_proxy(app.id)),
        data_quota_mb=app.data_quota_mb,
    )
    return RunTarget(
        host_id=host.host_id,
        endpoint=host.rpc_endpoint,
        public_key=host.rpc_key,
        assignment=assignment,
    )
