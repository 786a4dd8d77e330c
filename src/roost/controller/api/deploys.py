"""Deploys: upload an archive, follow its build and rollout, read logs."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from roost import aio
from roost.controller.api.deps import (
    Account,
    ApiError,
    CurrentAccount,
    CurrentController,
    CurrentService,
    app_for_member,
)
from roost.controller.core import Controller
from roost.controller.deploycancel import Ended
from roost.controller.deployflow import Stage, outcome, stage_of
from roost.controller.store import AppRow, BuildRow, NotFound

router = APIRouter(prefix="/api")

GZIP_MAGIC = b"\x1f\x8b"


@router.post("/apps/{name}/builds", status_code=202)
async def create_build(
    name: str, request: Request, who: CurrentAccount, c: CurrentController, svc: CurrentService
) -> dict[str, str]:
    app = await app_for_member(c, who, name)
    limit = c.settings.max_upload_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"upload larger than {limit} bytes")
        chunks.append(chunk)
    archive = b"".join(chunks)
    if not archive.startswith(GZIP_MAGIC):
        raise ApiError(400, "upload must be a gzip-compressed tar archive")
    build_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(4)
    await svc.start_build(app.name, app.id, build_id, archive)
    return {"build_id": build_id, "app": app.name}


async def _build_or_404(c: Controller, who: Account, build_id: str) -> tuple[BuildRow, AppRow]:
    try:
        build = await c.store.build(build_id)
    except NotFound:
        raise ApiError(404, f"no build {build_id}") from None
    app = await c.store.app_by_id(build.app_id)
    await app_for_member(c, who, app.name)
    return build, app


def _deploy(build: BuildRow) -> dict[str, Any]:
    """Where a deploy is (its stage) and, once it ended, how: `live`, and
    `outcome`, the line a user reads ("v4 is live", "rolled back: ...")."""
    stage = stage_of(build.status)
    return {
        "status": stage.value,
        "final": stage.final,
        "live": stage is Stage.LIVE,
        "outcome": outcome(build.status, build.error, build.release),
        "error": build.error,
        "release": build.release,
    }


def _build_row(build: BuildRow, app: AppRow) -> dict[str, Any]:
    return {
        "build_id": build.id,
        "app": app.name,
        **_deploy(build),
        "created_at": build.created_at,
        "finished_at": build.finished_at,
    }


@router.get("/builds/{build_id}")
async def build_status(build_id: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    build, app = await _build_or_404(c, who, build_id)
    return _build_row(build, app)


@router.post("/builds/{build_id}/cancel")
async def cancel_build(
    build_id: str, who: CurrentAccount, c: CurrentController, svc: CurrentService
) -> dict[str, Any]:
    """Cancel a deploy: a queued one at once, one under way at its next
    stage (a rolling-out release fails; the serving one keeps serving).
    409 when it had ended, with how."""
    _, app = await _build_or_404(c, who, build_id)
    try:
        build = await svc.cancel(build_id, who.email)
    except Ended as exc:
        raise ApiError(409, f"deploy {build_id} already ended: {exc}") from None
    return _build_row(build, app)


@router.get("/apps/{name}/builds")
async def app_builds(
    name: str, who: CurrentAccount, c: CurrentController, n: int = 10
) -> list[dict[str, Any]]:
    """An app's deploys, newest first: where each is, or how it ended."""
    app = await app_for_member(c, who, name)
    if not 1 <= n <= 100:
        raise ApiError(422, "n must be between 1 and 100")
    return [_build_row(b, app) for b in await c.store.builds_of(app.id, n)]


@router.get("/builds/{build_id}/stream")
async def build_stream(
    build_id: str, who: CurrentAccount, c: CurrentController
) -> StreamingResponse:
    """NDJSON: {"line": ...} as the build and rollout happen, then {"status": ...}
    once the deploy ended (see _deploy)."""
    _, app = await _build_or_404(c, who, build_id)

    async def lines() -> AsyncIterator[bytes]:
        after = 0
        deadline = time.monotonic() + 3600
        last_line = time.monotonic()
        while time.monotonic() < deadline:
            # The status before the lines: a deploy's closing lines are
            # committed with its final move, so once the move is seen the
            # lines read after it include them. Read the other way round, a
            # move committed between the two reads ended the stream without
            # its "v3 is live".
            current = await c.store.build(build_id)
            rows = await c.store.logs(app.id, after, 500, build_id)
            for r in rows:
                after = r.id
                last_line = time.monotonic()
                yield (json.dumps({"line": r.line, "ts": r.ts}) + "\n").encode()
            if stage_of(current.status).final and not rows:
                yield (json.dumps(_deploy(current)) + "\n").encode()
                return
            if not rows:
                # Woken when this replica ends a rollout: "vN is live" at once.
                await c.deploy_ended.wait(aio.follow_delay(time.monotonic() - last_line))

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# Lines one `roost logs -n` may ask for: an app may keep millions (its log
# retention), but one answer is read into memory whole.
MAX_LOG_LINES = 100_000


@router.get("/apps/{name}/logs")
async def app_logs(
    name: str,
    who: CurrentAccount,
    c: CurrentController,
    n: int = 100,
    follow: bool = False,
    process: str | None = None,
) -> StreamingResponse:
    app = await app_for_member(c, who, name)
    if not 1 <= n <= MAX_LOG_LINES:
        raise ApiError(422, f"n must be between 1 and {MAX_LOG_LINES}")

    async def lines() -> AsyncIterator[bytes]:
        rows = await c.store.logs(app.id, 0, n, None)
        after = rows[-1].id if rows else 0
        for r in rows:
            if process and not r.process.startswith(process):
                continue
            yield (
                json.dumps({"ts": r.ts, "source": r.source, "process": r.process, "line": r.line})
                + "\n"
            ).encode()
        while follow:
            rows = await c.store.logs(app.id, after, 500, None)
            for r in rows:
                after = r.id
                if process and not r.process.startswith(process):
                    continue
                yield (
                    json.dumps(
                        {"ts": r.ts, "source": r.source, "process": r.process, "line": r.line}
                    )
                    + "\n"
                ).encode()
            if not rows:
                await asyncio.sleep(0.3)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
