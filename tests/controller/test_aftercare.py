"""The automatic rollback: the pure decision under a fake clock, and the
lease holder's pass rolling a crash-looping release back through a real
(SQLite) store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import update

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller import aftercare, deployflow
from roost.controller.aftercare import Decision, decide, trouble
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.deployflow import Event, IllegalMove, ReleaseState, release_move
from roost.controller.store import Store
from roost.settings import Settings
from roost.state import tables as t
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, InstanceStatus
from tests.releases import digest, go_live

WINDOW = 300.0


@dataclass(frozen=True)
class Rel:
    version: int
    status: str
    promoted_at: float | None = None
    image_digest: str = "sha256:a"
    config: dict[str, str] = field(default_factory=dict)


def _st(
    state: str = "up", restarts: int = 0, err: str = "", unhealthy: bool = False
) -> InstanceStatus:
    return InstanceStatus(
        instance_id="i1", app="a", release=2, process_type="worker", state=state,  # type: ignore[arg-type]
        restarts=restarts, last_error=err, unhealthy=unhealthy,
    )  # fmt: skip


PLACED = [("i1", "worker", 1)]


def test_trouble_is_two_crashes_or_a_failed_check() -> None:
    assert trouble(PLACED, {"i1": _st("up", restarts=1)}) == ""  # one crash: not a loop
    assert trouble(PLACED, {}) == ""
    err = "exited with code 1\nTraceback (most recent call last):\n  ...\nRuntimeError: boom\n"
    why = trouble(PLACED, {"i1": _st("backoff", restarts=1, err=err)})
    assert why == "worker.1 crashed 2 times: exited with code 1: RuntimeError: boom"
    assert "crashed 3 times" in trouble(PLACED, {"i1": _st("up", restarts=3)})
    answer = "GET /up answered 500 after 3 attempts\n[gunicorn] Booting worker"
    failed = _st("crashed", err=answer, unhealthy=True)
    assert trouble(PLACED, {"i1": failed}) == (
        "worker.1 failed its health check: GET /up answered 500 after 3 attempts"
    )


def test_rolls_back_to_the_release_that_served_before_within_the_window() -> None:
    rels = [Rel(1, "superseded", 10.0, "sha256:a"), Rel(2, "superseded", 50.0, "sha256:b"),
            Rel(3, "failed"), Rel(4, "active", 1000.0, "sha256:c")]  # fmt: skip
    serving = rels[-1]
    # Two minutes after promotion: rolled back to v2 (v3 never served).
    assert decide(serving, rels, "web.1 crashed 2 times", 1120.0, WINDOW) == Decision(
        "rollback", 2, "web.1 crashed 2 times"
    )
    # Fine so far: look again later.
    assert decide(serving, rels, "", 1120.0, WINDOW).verdict == "wait"
    # Past the window: never by itself.
    assert decide(serving, rels, "web.1 crashed 2 times", 1301.0, WINDOW).verdict == "done"
    assert aftercare.message(4, 2, "web.1 crashed 2 times") == (
        "v4 crash-looped after promotion: web.1 crashed 2 times; rolled back to v2"
    )


def test_never_twice_never_onto_a_rolled_back_release_never_without_a_target() -> None:
    why = "web.1 crashed 2 times"
    # Rolled back from already (its status left active): done.
    gone = [Rel(1, "superseded", 1.0), Rel(2, "rolled-back", 5.0, "sha256:b")]
    assert decide(gone[1], gone, why, 10.0, WINDOW).verdict == "done"
    # The copy an automatic rollback made crash-loops too: the release before it
    # was rolled back from, so nothing is done (no flapping between the two).
    copy = [Rel(1, "superseded", 1.0), Rel(2, "rolled-back", 5.0, "sha256:b"),
            Rel(3, "active", 8.0, "sha256:a")]  # fmt: skip
    assert decide(copy[2], copy, why, 10.0, WINDOW).verdict == "done"
    # The app's first release: nothing to go back to.
    first = [Rel(1, "active", 1.0)]
    assert decide(first[0], first, why, 10.0, WINDOW).verdict == "done"
    # Promoted before promotion times were kept: outside any window.
    old = [Rel(1, "superseded"), Rel(2, "active", None, "sha256:b")]
    assert decide(old[1], old, why, 10.0, WINDOW).verdict == "done"
    # A restart (same image, same config) would crash the same way.
    same = [Rel(1, "superseded", 1.0, config={"K": "v"}), Rel(2, "active", 5.0, config={"K": "v"})]
    assert decide(same[1], same, why, 10.0, WINDOW).verdict == "done"
    # Only the config differs: that is worth going back to.
    conf = [Rel(1, "superseded", 1.0, config={"K": "v"}), Rel(2, "active", 5.0, config={"K": "w"})]
    assert decide(conf[1], conf, why, 10.0, WINDOW) == Decision("rollback", 1, why)


def test_a_newer_release_rolling_out_is_left_to_replace_it() -> None:
    rels = [Rel(1, "superseded", 1.0), Rel(2, "active", 5.0, "sha256:b"), Rel(3, "pending")]
    assert decide(rels[1], rels, "web.1 crashed 2 times", 10.0, WINDOW).verdict == "wait"


def test_the_release_moves_active_to_rolled_back_once() -> None:
    assert release_move("active", Event.CRASH_LOOPED).after == ReleaseState.ROLLED_BACK
    for state in ReleaseState:
        if state is ReleaseState.ROLLED_BACK:
            for event in Event:
                with pytest.raises(IllegalMove):
                    release_move(state.value, event)
        elif state is not ReleaseState.ACTIVE:
            with pytest.raises(IllegalMove):
                release_move(state.value, Event.CRASH_LOOPED)


# ---------------------------------------------------------------- through the store

SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)


@pytest.fixture
def astore(store: Store) -> Iterator[AsyncStore]:
    a = AsyncStore(store)
    yield a
    a.close()


def _leader(astore: AsyncStore) -> Controller:
    c = Controller(astore, Settings(host_grace_s=5.0), "test")
    c._lease_result(Lease("scheduler", c.holder_id, 1, 0.0), time.monotonic(), 60.0)
    c.leader_since = time.monotonic() - 100  # settled
    return c


def _beat(c: Controller, now: float, restarts: int = 0) -> None:
    """h1 reports what it was assigned: up, or crashing `restarts` times."""
    asg = c.assignments.get("h1")
    instances = [
        InstanceStatus(
            instance_id=i.instance_id, app=i.app, release=i.release, process_type="web",
            state="backoff" if restarts else "up", port=6000, restarts=restarts,
            last_error="RuntimeError: the cache is gone" if restarts else "",
        )
        for i in (asg.content if asg else ())
    ]  # fmt: skip
    c.soft.record(
        Heartbeat(host_id="h1", hostname="h1", addresses=["10.0.0.1"], instances=instances), now
    )


async def test_a_release_crash_looping_after_promotion_is_rolled_back(
    store: Store, astore: AsyncStore
) -> None:
    owner = store.create_account("o@example.com")
    app = store.create_app("shop", owner)
    store.update_config(app.id, {"K": "one"})
    v1 = store.create_release(app.id, "b1", digest("1"), digest("d"), SPEC, "", "build b1")
    go_live(store, app.id, v1)
    store.set_formation(app.id, {"web": 1})
    store.update_config(app.id, {"K": "two", "NEW": "x"})
    v2 = store.create_release(app.id, "b2", digest("2"), "", SPEC, "", "build b2")
    store.create_build("b2", app.id)
    with store.engine.begin() as conn:  # b2's deploy made v2 and rolls it out
        conn.execute(
            update(t.builds).where(t.builds.c.id == "b2").values(status="rolling-out", release=v2)
        )
    c = _leader(astore)
    now = time.monotonic()
    _beat(c, now)
    await c.reconcile_once()  # places v1 and v2's instances
    _beat(c, now)
    await c.reconcile_once()  # v2 is up: promoted
    assert store.app("shop").current_release == v2
    assert store.build("b2").status == "live"
    assert store.release(app.id, v2).promoted_at is not None
    _beat(c, now)
    await c.reconcile_once()  # v1's instance goes; v2 serves, fine
    assert [r.status for r in store.releases(app.id)] == ["active", "superseded"]

    _beat(c, now + 1, restarts=2)  # later: v2's instance crashes again and again
    await c.reconcile_once()
    rels = {r.version: r for r in store.releases(app.id)}
    assert set(rels) == {1, 2, 3}
    said = (
        "v2 crash-looped after promotion: web.1 crashed 3 times: "
        "RuntimeError: the cache is gone; rolled back to v1"
    )
    assert rels[2].status == "rolled-back" and rels[2].description == said
    # v3 is v1 again: its image, bundle and config, and the app's config vars with it.
    assert rels[3].status == "pending" and rels[3].image_digest == digest("1")
    assert rels[3].static_digest == digest("d") and rels[3].config == {"K": "one"}
    assert store.config_vars(app.id) == {"K": "one"}
    assert rels[3].description.startswith("automatic rollback to v1")
    events = [(e.kind, e.message) for e in store.events()]
    assert ("deploy-rolled-back", f"shop: {said}") in events
    lines = [(r.source, r.process, r.line) for r in store.logs(app.id, 0, 50)]
    assert ("platform", "", said) in lines and ("build", "b2", f"-----> {said}") in lines
    # `roost deploys` says so: the deploy that made v2 is rolled back too.
    b2 = store.build("b2")
    assert (b2.status, b2.error) == ("rolled-back", said)
    assert deployflow.outcome(b2.status, b2.error, b2.release) == f"rolled back: {said}"

    # Still crash-looping while v3 starts: nothing more is done.
    _beat(c, now + 2, restarts=4)
    await c.reconcile_once()
    assert len(store.releases(app.id)) == 3
    _beat(c, now + 3)
    await c.reconcile_once()
    _beat(c, now + 3)
    await c.reconcile_once()
    assert store.app("shop").current_release == 3
    assert [r.status for r in store.releases(app.id)] == ["active", "rolled-back", "superseded"]
    # v3 crash-looping in turn is left alone: v2 before it was rolled back from.
    _beat(c, now + 4, restarts=2)
    await c.reconcile_once()
    assert len(store.releases(app.id)) == 3


async def test_outside_the_window_a_crash_loop_is_left_alone(
    store: Store, astore: AsyncStore
) -> None:
    owner = store.create_account("o@example.com")
    app = store.create_app("shop", owner)
    go_live(store, app.id, store.create_release(app.id, "b1", digest("1"), "", SPEC, "", "b1"))
    store.set_formation(app.id, {"web": 1})
    go_live(store, app.id, store.create_release(app.id, "b2", digest("2"), "", SPEC, "", "b2"))
    with store.engine.begin() as db:  # v2 went live six minutes ago
        db.execute(update(t.releases).values(promoted_at=time.time() - 360))
    c = _leader(astore)
    now = time.monotonic()
    for restarts in (0, 0, 3, 5):
        _beat(c, now, restarts)
        await c.reconcile_once()
    assert [r.status for r in store.releases(app.id)] == ["active", "superseded"]
    assert (app.id, 2) in c.autorollback._done  # not read again
