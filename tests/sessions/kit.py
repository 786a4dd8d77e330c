"""Exec sessions as a runner's daemon starts them, for the session and
release phase tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.runner.shimsession import ShimHolder
from roost.sessions.server import ExecSessions


@pytest.fixture(params=["direct", "shim"])
async def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ExecSessions]:
    """Every test twice: processes the server's own, and held by shims (a runner's)."""
    holder = ShimHolder(tmp_path / "shims") if request.param == "shim" else None
    es = ExecSessions(idle_s=30, grace_s=2, holder=holder)
    task = asyncio.create_task(es.run())
    yield es
    es.shutdown()
    await asyncio.wait_for(task, 10)
