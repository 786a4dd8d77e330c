"""The lease holder's passes look only at what changed, and end where a full pass would.

A seeded random walk of incidents (hosts dying and coming back, instances
crashing, scaling and suspending through another replica, new releases,
domains, deleted apps) drives one controller's incremental passes on
SQLite, with runners simulated from its assignments. Whenever it has
settled, a fresh controller reads everything and does one full pass over
the same soft state: it must find nothing to place, and build the very same
assignments and route table.
"""

from __future__ import annotations

import copy
import random
import time

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, InstanceStatus
from tests.controller.specs import WEB_AND_WORKER as SPEC
from tests.releases import go_live

HOSTS = [f"h{i}" for i in range(1, 7)]
# No drains: they live in the holder's memory alone (controller/drain.py), so
# a fresh holder's full pass would not assign what still drains.
SETTINGS = Settings(host_grace_s=5.0, instance_memory_mb=256, drain_s=0.0)


def leader(store: Store) -> Controller:
    c = Controller(AsyncStore(store), SETTINGS, "test")
    c._lease_result(Lease("scheduler", c.holder_id, 1, 0.0), time.monotonic(), 3600.0)
    c.leader_since = time.monotonic() - 100  # settled
    return c


class Runners:
    """Hosts that run what they are assigned, up unless told otherwise."""

    def __init__(self, c: Controller) -> None:
        self.c = c
        self.silent: set[str] = set()
        self.crashed: set[str] = set()  # instance ids reported crashed on the next beat

    def beat(self) -> None:
        now = time.monotonic()
        for host in HOSTS:
            if host in self.silent:
                continue
            asg = self.c.assignments.get(host)
            instances = [
                InstanceStatus(
                    instance_id=i.instance_id, app=i.app, release=i.release,
                    process_type=i.process_type,
                    state="crashed" if i.instance_id in self.crashed else "up",
                    port=7000 + n,
                )
                for n, i in enumerate(asg.content if asg else ())
            ]  # fmt: skip
            self.c.soft.record(
                Heartbeat(host_id=host, hostname=host, addresses=[f"10.0.0.{host[1:]}"],
                          memory_mb=1024, instances=instances),
                now,
            )  # fmt: skip
        for host in self.silent:
            seen = self.c.soft.hosts.get(host)
            if seen is not None:
                seen.last_seen = now - 100
        self.crashed.clear()

    def state(self, store: Store) -> tuple[object, ...]:
        versions = {h: a.version for h, a in self.c.assignments.items()}
        # The desired-state count: a rollout the pass ended is looked at next pass.
        return (versions, self.c.route_version, store.desired_version())

    async def settle(self, store: Store) -> None:
        """Beats and passes until a pass changes nothing (a rollout short of
        room may wait on: it does not move until its deadline)."""
        last = None
        for _ in range(12):
            self.beat()
            await self.c.reconcile_once()
            if self.state(store) == last:
                return
            last = self.state(store)
        raise AssertionError("the controller did not settle")


async def full_pass_agrees(store: Store, c: Controller) -> None:
    before = sorted(p.instance_id for p in store.placements())
    f = leader(store)
    f.soft = copy.deepcopy(c.soft)
    try:
        await f.reconcile_once()
        assert sorted(p.instance_id for p in store.placements()) == before, "left to place"
        assert f.routes == c.routes
        assert {h: a.content for h, a in f.assignments.items()} == {
            h: a.content for h, a in c.assignments.items()
        }
    finally:
        f.store.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_incremental_passes_end_where_a_full_pass_would(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    owner = store.create_account("o@example.com")
    names = [f"app{i}" for i in range(10)]
    for name in names:
        app = store.create_app(name, owner)
        go_live(
            store, app.id, store.create_release(app.id, "b", f"sha256:{name}", "", SPEC, "", "1")
        )
        store.set_formation(app.id, {"web": rng.choice([1, 2, 3]), "worker": rng.choice([0, 1])})
    c = leader(store)
    runners = Runners(c)
    try:
        await runners.settle(store)
        await full_pass_agrees(store, c)
        for _ in range(25):
            live = [n for n in names if any(a.name == n for a in store.apps())]
            app = store.app(rng.choice(live))
            match rng.randrange(8):
                case 0 if len(runners.silent) < 2:
                    runners.silent.add(rng.choice(HOSTS))
                case 1 if runners.silent:
                    runners.silent.discard(rng.choice(sorted(runners.silent)))
                case 2:
                    placed = [p.instance_id for p in store.placements(app.name)]
                    runners.crashed.update(rng.sample(placed, min(1, len(placed))))
                case 3:
                    store.set_formation(app.id, {"web": rng.choice([0, 1, 2, 3])})
                case 4:
                    store.set_suspended(app.id, not app.suspended)
                case 5 if app.current_release is not None:
                    store.copy_release(app.id, app.current_release, "restart")
                case 6:
                    store.add_domain(app.id, f"{app.name}-{rng.randrange(99)}.example.com")
                case 7 if len(live) > 6:
                    store.delete_app(app.name)
            await runners.settle(store)
            await full_pass_agrees(store, c)
    finally:
        c.store.close()
