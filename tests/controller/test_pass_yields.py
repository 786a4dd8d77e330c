"""A new holder's first pass looks at every app without holding the loop.

At 1,000 runners and 50,000 instances one unbroken piece of it (building
the model from the first read, a collection of everything the pass made)
left every heartbeat unanswered for a quarter of a second or more. Here a
pass over a few apps, in steps of 2, must give the loop back between the
parts it absorbs the read in and between the steps it places them in, and
leave what it built out of the collector's sight (gc.freeze).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Iterator

import pytest

from roost.controller import core, reconcilestep
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.model import Model
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat
from tests.controller.specs import WEB_AND_WORKER as SPEC
from tests.releases import go_live

APPS = 7


@pytest.fixture
def frozen_after() -> Iterator[None]:
    """What a pass freezes is given back to the collector after the test."""
    yield
    gc.unfreeze()


async def test_a_full_pass_serves_the_loop_between_parts_and_steps(
    store: Store, monkeypatch: pytest.MonkeyPatch, frozen_after: None
) -> None:
    monkeypatch.setattr(core, "STEP_APPS", 2)
    owner = store.create_account("o@example.com")
    for i in range(APPS):
        app = store.create_app(f"app{i}", owner)
        go_live(store, app.id, store.create_release(app.id, "b", f"sha256:{i}", "", SPEC, "", "1"))
        store.set_formation(app.id, {"web": 1})
    c = Controller(AsyncStore(store), Settings(host_grace_s=5.0), "t")
    c._lease_result(Lease("scheduler", c.holder_id, 1, 0.0), time.monotonic(), 3600.0)
    c.leader_since = time.monotonic() - 100  # settled: this pass places too
    for host in ("h1", "h2"):
        c.soft.record(
            Heartbeat(host_id=host, hostname=host, addresses=["10.0.0.1"], memory_mb=4096),
            time.monotonic(),
        )
    # What ran, in order: each part absorbed, each step, and a stand-in for
    # the heartbeats the loop answers whenever the pass lets it.
    events: list[str] = []
    absorb, step = Model.absorb, reconcilestep.step

    def absorbing(m: Model, d: core.desired.Desired) -> set[str]:
        events.append("absorb")
        return absorb(m, d)

    async def stepping(c: Controller, apps: list[str], *args: object) -> bool:
        events.append("step")
        return await step(c, apps, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Model, "absorb", absorbing)
    monkeypatch.setattr(reconcilestep, "step", stepping)

    async def heartbeats() -> None:
        while True:
            events.append("beat")
            await asyncio.sleep(0)

    frozen = gc.get_freeze_count()
    beats = asyncio.create_task(heartbeats())
    try:
        assert await c.reconcile_once()
    finally:
        beats.cancel()
        c.store.close()
    work = [e for e in events if e != "beat"]
    assert work.count("absorb") == 4 and work.count("step") == 4  # 7 apps, 2 at a time
    # Between any two pieces of work the loop ran something else.
    pieces = [i for i, e in enumerate(events) if e != "beat"]
    assert all(b - a > 1 for a, b in itertools.pairwise(pieces))
    assert len(store.placements()) == APPS  # and the pass did its work
    assert gc.get_freeze_count() > frozen
