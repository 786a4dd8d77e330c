"""A release rolling out, through the lease holder's reconcile passes (SQLite
store, runners played by heartbeats): workers start before the old ones
stop, a singleton's old instance stops before its new one starts, and the
release is promoted only once the new singleton is up too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, InstanceState, InstanceStatus
from tests.migrated import migrated_sqlite
from tests.releases import go_live

SPEC = AppSpec(
    processes={
        "web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True),
        "worker": ProcessSpec(name="worker", kind="command", command="./work"),
        "clock": ProcessSpec(name="clock", kind="command", command="./clock"),
    },
    singletons=["clock"],
)
HOSTS = ("h1", "h2")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = migrated_sqlite(tmp_path / "state.db")
    s = Store(make_engine(url))
    app = s.create_app("shop", s.create_account("o@example.com"))
    go_live(s, app.id, s.create_release(app.id, "b1", "sha256:one", "", SPEC, "", "first"))
    s.set_formation(app.id, {"web": 1, "worker": 1, "clock": 1})
    yield s
    s.engine.dispose()


@pytest.fixture
def controller(store: Store) -> Iterator[Controller]:
    astore = AsyncStore(store)
    c = Controller(astore, Settings(host_grace_s=5.0), "test")
    c._lease_result(Lease("scheduler", c.holder_id, 1, 0.0), time.monotonic(), 60.0)
    c.leader_since = time.monotonic() - 100  # settled
    yield c
    astore.close()


class Runners:
    """What each host reports: every instance assigned to it, `up`, plus
    instances it is still stopping (no longer assigned)."""

    def __init__(self, c: Controller) -> None:
        self.c = c
        self.stopping: dict[str, list[InstanceStatus]] = {h: [] for h in HOSTS}

    def beat(self) -> None:
        for host in HOSTS:
            asg = self.c.assignments.get(host)
            running = [
                self._status(i.instance_id, i.release, i.process_type, "up")
                for i in (asg.content if asg else ())
            ]
            # The assignment it converges to, as a runner says in every beat.
            self.c.soft.record(
                Heartbeat(host_id=host, hostname=host, addresses=["127.0.0.1"],
                          instances=running + self.stopping[host], fence=self.c.fence,
                          version=asg.version if asg else 0),
                time.monotonic(),
            )  # fmt: skip

    def assigned(self) -> set[tuple[int, str]]:
        """(release, process type) of every instance the hosts are told to run."""
        return {
            (i.release, i.process_type) for asg in self.c.assignments.values() for i in asg.content
        }

    def keep_stopping(self, was: dict[str, tuple[str, int, str]]) -> None:
        """Instances `was` assigned (id -> host, release, type) that no
        longer are: their runner reports them `stopping`."""
        now = {i.instance_id for asg in self.c.assignments.values() for i in asg.content}
        for iid, (host, rel, ptype) in was.items():
            if iid not in now:
                self.stopping[host].append(self._status(iid, rel, ptype, "stopping"))

    def snapshot(self) -> dict[str, tuple[str, int, str]]:
        return {
            i.instance_id: (host, i.release, i.process_type)
            for host, asg in self.c.assignments.items()
            for i in asg.content
        }

    @staticmethod
    def _status(iid: str, release: int, ptype: str, state: InstanceState) -> InstanceStatus:
        return InstanceStatus(
            instance_id=iid, app="shop", release=release, process_type=ptype, state=state,
            port=6000,
        )  # fmt: skip


async def test_workers_start_before_old_ones_stop_and_a_singleton_stops_first(
    store: Store, controller: Controller
) -> None:
    c, runners = controller, Runners(controller)
    runners.beat()
    await c.reconcile_once()
    assert runners.assigned() == {(1, "web"), (1, "worker"), (1, "clock")}
    runners.beat()
    await c.reconcile_once()
    app = store.app("shop")
    v2 = store.create_release(app.id, "b2", "sha256:two", "", SPEC, "", "second")

    was = runners.snapshot()
    await c.reconcile_once()
    # v2's web and worker start beside v1's; v1's clock is told to stop and
    # v2's is not started yet.
    assert runners.assigned() == {(1, "web"), (1, "worker"), (2, "web"), (2, "worker")}
    runners.keep_stopping(was)
    assert [s.process_type for s in runners.stopping["h1"] + runners.stopping["h2"]] == ["clock"]
    # While v1's clock is reported stopping, v2's waits, and v2 is not promoted
    # though everything else of it is up.
    for _ in range(2):
        runners.beat()
        await c.reconcile_once()
        assert (2, "clock") not in runners.assigned()
        assert store.release(app.id, v2).status == "pending"
    # The old clock is gone: the new one is placed; v2 still waits for it.
    runners.stopping = {h: [] for h in HOSTS}
    runners.beat()
    await c.reconcile_once()
    assert runners.assigned() == {
        (1, "web"), (1, "worker"), (2, "web"), (2, "worker"), (2, "clock"),
    }  # fmt: skip
    assert store.release(app.id, v2).status == "pending"
    # Everything of v2 up: promoted, and v1's worker goes.
    runners.beat()
    await c.reconcile_once()
    assert store.release(app.id, v2).status == "active"
    await c.reconcile_once()
    placed = {(p.release, p.process_type) for p in store.placements("shop")}
    assert placed == {(2, "web"), (2, "worker"), (2, "clock")}


async def test_a_new_singleton_waits_for_the_host_to_take_the_old_ones_removal(
    store: Store, controller: Controller
) -> None:
    c, runners = controller, Runners(controller)
    for _ in range(2):
        runners.beat()
        await c.reconcile_once()
    app = store.app("shop")
    v2 = store.create_release(app.id, "b2", "sha256:two", "", SPEC, "", "second")
    await c.reconcile_once()
    runners.beat()  # v1's clock stopped at once (no longer reported)
    await c.reconcile_once()
    assert (2, "clock") in runners.assigned() and (1, "clock") not in runners.assigned()
    # v2 fails before its runner said anything of its clock (a newer copy of
    # v1 supersedes it, as a rollback would): that clock may have started,
    # so v3's waits for the host to take the assignment without it.
    v3 = store.copy_release(app.id, 1, "rollback to v1")
    assert store.release(app.id, v2).status == "failed"
    for _ in range(2):
        await c.reconcile_once()
        assert (2, "clock") not in runners.assigned()
        assert (3, "clock") not in runners.assigned()
    runners.beat()  # the host took it, and reports no clock
    await c.reconcile_once()
    assert (3, "clock") in runners.assigned()
    assert v3 > v2
