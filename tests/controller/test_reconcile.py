"""The lease holder's reconcile pass, in process on SQLite, with a fake clock for soft state.

Covers what the cluster tests rely on: desired state read once and reused when
unchanged, silent hosts' work moved and their assignment emptied, every
replica marking hosts down, local expiry of the lease, and a new holder's
first publication being a full route table.
"""

from __future__ import annotations

import time

from roost.controller import desired
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.scheduler import Placement
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, InstanceStatus, RouteDelta, RouteSnapshot
from tests.controller import reconcilekit
from tests.controller.reconcilekit import beat, leader

# reconcilekit's fixtures, found by pytest among this module's names.
astore, store = reconcilekit.astore, reconcilekit.store


async def test_silent_hosts_work_moves_and_its_assignment_empties(
    store: Store, astore: AsyncStore
) -> None:
    c, pub = leader(astore)
    now = time.monotonic()
    for h in ("h1", "h2", "h3"):
        beat(c, h, now)
    assert await c.reconcile_once() is True
    placed = store.placements("shop")
    assert len(placed) == 2 and len({p.host_id for p in placed}) == 2
    assert isinstance(pub.msgs[0], RouteSnapshot) and pub.msgs[0].fence == 1
    for h in ("h1", "h2", "h3"):
        beat(c, h, now)
    await c.reconcile_once()
    route = c.routes["shop"]
    assert len(route.backends) == 2 and isinstance(pub.msgs[-1], RouteDelta)
    # Nothing changed: the re-read is recognised and nothing is done.
    assert await c.reconcile_once() is False

    victim = placed[0].host_id
    version = c.assignments[victim].version
    survivors = [h for h in ("h1", "h2", "h3") if h != victim]
    later = time.monotonic() + 6  # the victim is silent past the grace period
    for h in survivors:
        beat(c, h, later)
    c.soft.hosts[victim].last_seen = now - 10
    await c.reconcile_once()
    moved = store.placements("shop")
    assert victim not in {p.host_id for p in moved}
    assert {p.idx for p in moved} == {1, 2} and len({p.host_id for p in moved}) == 2
    # The silent host's assignment is now empty, at a newer version: if it
    # comes back, the first heartbeat reply tells it to stop what it runs.
    assert c.assignments[victim].content == () and c.assignments[victim].version > version
    # The route lost the silent host's backend at once; the replacement is
    # routed only once it reports up.
    assert [b.host_id for b in c.routes["shop"].backends] == [
        p.host_id for p in placed if p.host_id != victim
    ]
    for h in survivors:
        beat(c, h, later)
    await c.reconcile_once()
    assert sorted(b.host_id for b in c.routes["shop"].backends) == sorted(survivors)


async def test_changes_through_the_store_are_picked_up(store: Store, astore: AsyncStore) -> None:
    c, _ = leader(astore)
    now = time.monotonic()
    for h in ("h1", "h2"):
        beat(c, h, now)
    await c.reconcile_once()
    assert await c.reconcile_once() is False
    store.set_formation(store.app("shop").id, {"web": 3})  # e.g. another replica's API
    assert await c.reconcile_once() is True
    assert len(store.placements("shop")) == 3


async def test_followers_mark_silent_hosts_down_too(astore: AsyncStore) -> None:
    c = Controller(astore, Settings(host_grace_s=5.0), "follower")
    assert not c.is_leader
    now = time.monotonic()
    beat(c, "h1", now)
    await c.note_down_hosts(now + 6)
    assert not c.soft.alive("h1")


def test_lease_is_believed_only_until_it_could_have_expired(astore: AsyncStore) -> None:
    c = Controller(astore, Settings(), "test")
    lease = Lease("scheduler", c.holder_id, 4, 0.0)
    c._lease_result(lease, time.monotonic(), 5.0)
    assert c.is_leader and c.fence == 4
    # The renewal that would extend it was sent 10 s ago and never came back.
    c._lease_result(lease, time.monotonic() - 10, 5.0)
    assert c.fence == 4 and not c.is_leader
    c._lease_result(None, time.monotonic(), 5.0)
    assert c.fence == 0 and not c.is_leader


async def test_same_token_again_keeps_versions_new_token_restarts_them(
    astore: AsyncStore,
) -> None:
    c, pub = leader(astore, token=3)
    for h in ("h1", "h2"):
        beat(c, h, time.monotonic())
    await c.reconcile_once()
    versions = {h: a.version for h, a in c.assignments.items()}
    # A renewal that failed, then succeeded with the same token: same holder.
    c._lease_result(Lease("scheduler", c.holder_id, 3, 0.0), time.monotonic(), 60.0)
    assert {h: a.version for h, a in c.assignments.items()} == versions
    # The lease changed hands and came back: versions restart under the new
    # fence, and the first publication is a full table again.
    c._lease_result(Lease("scheduler", c.holder_id, 5, 0.0), time.monotonic(), 60.0)
    assert c.assignments == {}
    await c.reconcile_once()
    assert all(a.version == 1 for a in c.assignments.values())
    assert isinstance(pub.msgs[-1], RouteSnapshot) and pub.msgs[-1].fence == 5


def test_settled_after_grace_or_when_informed(astore: AsyncStore) -> None:
    c = Controller(astore, Settings(host_grace_s=5.0), "test")
    now = time.monotonic()
    assert not c.settled(now)
    c.leader_since = now
    assert not c.settled(now + 1)
    assert c.settled(now + 5)
    # A follower that heard heartbeats for a grace period may place at once.
    for t in range(7):
        beat(c, "h1", now + t)
    c.leader_since = now + 6
    assert c.settled(now + 6)


def test_reader_reports_only_what_changed(store: Store) -> None:
    r = desired.Reader()
    first = r.read(store, set())
    shop = store.app("shop")
    assert first is not None and first.full
    assert [a.row.name for a in first.apps.values() if a] == ["shop"]
    assert set(first.fetched) == {(shop.id, 1)}
    # Nothing written since: the desired-state count alone is read.
    assert r.read(store, first.fetched) is None
    other = store.create_app("other", shop.owner_id)
    store.add_domain(shop.id, "shop.example.com")
    second = r.read(store, first.fetched)
    assert second is not None and not second.full
    assert set(second.apps) == {shop.id, other.id}
    inputs = second.apps[shop.id]
    assert inputs is not None and inputs.domains == ("shop.example.com",)
    assert second.fetched == {}  # v1 is cached already
    wants, serving = desired.wants(inputs, first.fetched, 256)
    assert [(w.app, w.process_type, w.count) for w in wants] == [("shop", "web", 2)]
    assert serving is not None and serving.version == 1 and inputs.pending == ()
    store.set_suspended(shop.id, True)
    third = r.read(store, first.fetched)
    assert third is not None and set(third.apps) == {shop.id}
    suspended = third.apps[shop.id]
    assert suspended is not None and desired.wants(suspended, first.fetched, 256)[0] == []
    # Placements the lease holder wrote are no change to it...
    p = Placement("shop-web-1-v1-aa", "shop", 1, "web", 1, "h1")
    r.wrote_placements({"shop": [p]}, store.replace_placements([], [p], {"shop": shop.id}))
    assert r.read(store, first.fetched) is None
    # ...nor when someone else wrote too, though then the tables are read again.
    store.set_formation(other.id, {"web": 1})
    q = Placement("shop-web-2-v1-bb", "shop", 1, "web", 2, "h2")
    r.wrote_placements({"shop": [p, q]}, store.replace_placements([p], [p, q], {"shop": shop.id}))
    fourth = r.read(store, first.fetched)
    assert fourth is not None and set(fourth.apps) == {other.id}
    # Placements another writer changed (a restart through the API) are.
    store.drop_placements(shop.id, "web")
    fifth = r.read(store, first.fetched)
    assert fifth is not None and set(fifth.apps) == {shop.id} and fifth.placements[shop.id] == []
    store.delete_app("other")
    sixth = r.read(store, first.fetched)
    assert sixth is not None and sixth.apps == {other.id: None}


async def test_a_formation_size_reaches_the_assignments(store: Store, astore: AsyncStore) -> None:
    """`roost scale web=:512M`: each web instance's assignment carries 512 MB
    (its cgroup's limit), other types keep the default; quantities stay."""
    c, _ = leader(astore)
    now = time.monotonic()
    for h in ("h1", "h2"):
        beat(c, h, now)
    await c.reconcile_once()

    def sizes() -> set[int]:
        return {i.memory_mb for a in c.assignments.values() for i in a.content}

    assert sizes() == {c.settings.instance_memory_mb}
    store.set_formation(store.app("shop").id, {}, {"web": 512})
    assert await c.reconcile_once() is True
    assert sizes() == {512}
    assert store.formation(store.app("shop").id) == {"web": 2}
    store.set_formation(store.app("shop").id, {"web": 3})  # the size stays
    await c.reconcile_once()
    assert sizes() == {512} and len(store.placements("shop")) == 3


async def test_once_settled_work_on_hosts_never_heard_of_moves(
    store: Store, astore: AsyncStore
) -> None:
    """A new lease holder places nothing for a grace period; then it looks at
    every app once, so work on a host it never heard from moves (no heartbeat
    of that host ever said anything changed)."""
    shop = store.app("shop")
    ghost = [Placement(f"shop-web-{i}-v1-old", "shop", 1, "web", i, "gone") for i in (1, 2)]
    store.replace_placements([], ghost, {"shop": shop.id})
    c, _ = leader(astore)
    c.leader_since = time.monotonic()  # just took the lease
    for h in ("h1", "h2"):
        beat(c, h, time.monotonic())
    await c.reconcile_once()
    assert {p.host_id for p in store.placements("shop")} == {"gone"}
    c.leader_since = time.monotonic() - 10  # a grace period later, nothing else new
    await c.reconcile_once(refresh=False)
    assert {p.host_id for p in store.placements("shop")} == {"h1", "h2"}


async def test_a_new_holder_publishes_no_table_before_it_heard_the_hosts_its_instances_are_on(
    store: Store, astore: AsyncStore
) -> None:
    """A controller restarted (roost up --reload) while instances serve: its
    soft state is empty, so a table published at once would route the app to
    no instance, and routers take a new holder's table whole (503s until the
    first heartbeats). It waits for those hosts, then publishes everything."""
    shop = store.app("shop")
    running = [Placement(f"shop-web-{i}-v1-aaa", "shop", 1, "web", i, f"h{i}") for i in (1, 2)]
    store.replace_placements([], running, {"shop": shop.id})
    c, pub = leader(astore)
    c.leader_since = time.monotonic()  # just took the lease
    await c.reconcile_once()
    assert pub.msgs == [] and not c.table_published
    beat(c, "h1", time.monotonic())
    await c.reconcile_once(refresh=False)
    assert pub.msgs == []  # h2 not heard yet
    # Both heard (reporting the instances they run): one full table, both routed.
    for h in ("h1", "h2"):
        c.soft.record(
            Heartbeat(host_id=h, hostname=h, addresses=[f"10.0.0.{h[-1]}"], instances=[
                InstanceStatus(instance_id=p.instance_id, app="shop", release=1,
                               process_type="web", state="up", port=6000)
                for p in running if p.host_id == h
            ]),
            time.monotonic(),
        )  # fmt: skip
    await c.reconcile_once(refresh=False)
    assert [type(m) for m in pub.msgs] == [RouteSnapshot] and c.table_published
    snapshot = pub.msgs[0]
    assert isinstance(snapshot, RouteSnapshot)
    (route,) = snapshot.routes
    assert sorted(b.instance_id for b in route.backends) == [p.instance_id for p in running]
