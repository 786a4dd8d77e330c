"""What a host restore takes from the catalog (pure): the platform backups
that recorded the servicehost, and per app the newest verified backup of
each service it held there and of a data directory pulled from it; each
app's part as one stretch (its time in maintenance), and whether it came
back whole."""

from __future__ import annotations

import json

import pytest

from roost.backups.catalog import Record, new_id
from roost.backups.hostrestore import (
    TREE_KEPT,
    HostRestorer,
    Step,
    by_app,
    choose,
    in_tree,
    outcome,
    platform_candidates,
    services_of,
    state_file,
    without_bucket,
)
from roost.backups.restore import RestoreRefused
from roost.backups.sources import Where
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    BackupEntry,
    BackupKind,
    BackupRestore,
    BackupRestored,
    BackupSource,
    HostRestoreReport,
)

T0 = 1_780_000_000.0


def rec(
    kind: BackupKind,
    app: str,
    at: float,
    state: str = "verified",
    source: str = "svc1",
    **kw: object,
) -> Record:
    entry = BackupEntry(id=new_id(kind, at), app=app, kind=kind, taken_at=at, state=state)  # type: ignore[arg-type]
    return Record(entry=entry, source=source, snapshots={"local": "s" + entry.id[-6:]}, **kw)  # type: ignore[arg-type]


def platform(at: float, hosts: list[str], state: str = "verified") -> Record:
    files = {state_file(h): "0" * 64 for h in hosts}
    return rec("platform", "", at, state, "controller", facts={"files": files})


def test_platform_backups_that_recorded_the_host_newest_first_failed_ones_aside() -> None:
    older, newer = platform(T0, ["svc1"]), platform(T0 + 10, ["svc1", "svc2"])
    records = [newer, older, platform(T0 + 20, ["svc1"], "failed"), platform(T0 + 30, ["svc2"])]
    assert platform_candidates(records, "svc1") == [newer, older]
    assert platform_candidates(records, "svc3") == []


def test_per_service_the_newest_verified_backup_and_none_when_there_is_none() -> None:
    db_old, db_new = rec("pgdump", "shop", T0), rec("pgdump", "shop", T0 + 10)
    unproven = rec("pgdump", "shop", T0 + 20, "taken")
    failed_redis = rec("redis", "shop", T0, "failed")
    data_here = rec("data", "shop", T0)
    data_elsewhere = rec("data", "blog", T0 + 5, source="svc2")
    only_failed_data = rec("data", "news", T0, "failed")
    records = [db_old, db_new, unproven, failed_redis, data_here, data_elsewhere, only_failed_data]
    steps = choose(records, "svc1", [("shop", "postgres"), ("shop", "redis"), ("blog", "postgres")])
    assert [(s.app, s.kind, s.record) for s in steps] == [
        ("blog", "pgdump", None),  # no backup of it at all
        ("news", "data", None),  # its data directory was here, never proven
        ("shop", "pgdump", db_new),  # not the newer one still waiting for its drill
        ("shop", "redis", None),
        ("shop", "data", data_here),
    ]


def test_the_services_of_a_recorded_state_and_one_that_does_not_read() -> None:
    state = {
        "postgres": {"port": 5432, "password": "p"},
        "services": {
            "postgres/shop": {"app": "shop", "kind": "postgres", "port": 5432, "password": "x"},
            "redis/shop": {"app": "shop", "kind": "redis", "port": 6400, "password": "y"},
        },
        "restores": {},
    }
    assert services_of(json.dumps(state).encode()) == {("shop", "postgres"), ("shop", "redis")}
    assert services_of(b'{"services": {}}') == set()
    with pytest.raises(RestoreRefused, match="does not read"):
        services_of(b"{not json")


def test_each_apps_steps_are_one_stretch_in_the_order_chosen() -> None:
    db, data = rec("pgdump", "shop", T0), rec("data", "shop", T0)
    steps = [
        Step("blog", "pgdump", None),
        Step("shop", "pgdump", db),
        Step("shop", "redis", None),
        Step("shop", "data", data),
    ]
    assert by_app(steps) == [("blog", steps[:1]), ("shop", steps[1:])]
    assert by_app([]) == []


def test_an_app_is_back_only_when_every_kind_came_back() -> None:
    ok = HostRestoreReport(app="shop", kind="pgdump", ok=True, backup_id="pgdump-1")
    empty = HostRestoreReport(
        app="shop",
        kind="redis",
        ok=False,
        message="no verified backup of its Redis: it comes back empty",
    )
    failed = HostRestoreReport(
        app="shop", kind="data", ok=False, backup_id="data-1", message="not restored: disk full"
    )
    assert outcome([ok]) == (True, "database: from pgdump-1")
    assert outcome([ok, empty, failed]) == (
        False,
        "database: from pgdump-1; Redis: no verified backup of its Redis: it comes back empty; "
        "data directory: not restored: disk full",
    )
    assert outcome([]) == (False, "nothing to restore")


def test_a_bucket_comes_back_with_its_apps_data_kind() -> None:
    data_here = rec("data", "pics", T0)
    steps = choose([data_here], "svc1", [("pics", "s3"), ("docs", "s3")])
    assert [(s.app, s.kind, s.record) for s in steps] == [
        ("docs", "data", None),  # a bucket never proven: reported, comes back empty
        ("pics", "data", data_here),
    ]
    state = {"services": {"s3/pics": {"app": "pics", "kind": "s3", "port": 8333}}}
    assert services_of(json.dumps(state).encode()) == {("pics", "s3")}


BUCKET = {"s3/pics": {"app": "pics", "kind": "s3", "port": 7154, "password": "x"}}
NODE = {"ports": {}, "admin_key": "k", "admin_secret": "s"}


def test_buckets_with_no_s3_server_in_the_state_are_in_the_clusters_tree() -> None:
    assert in_tree(json.dumps({"services": BUCKET}).encode()) == {"pics"}
    one_machine = {"services": BUCKET, "s3": NODE}
    assert in_tree(json.dumps(one_machine).encode()) == set()
    assert in_tree(b'{"services": {}}') == set()
    with pytest.raises(RestoreRefused, match="does not read"):
        in_tree(b"{not json")


def test_a_data_backup_without_its_bucket() -> None:
    both = rec("data", "pics", T0, facts={"manifest": {"a": [1, "h"]}, "bucket": {"o": [1, "h"]}})
    alone = without_bucket(both)
    assert alone is not None and alone.facts == {"manifest": {"a": [1, "h"]}}
    assert (alone.id, alone.snapshots) == (both.id, both.snapshots)
    assert without_bucket(rec("data", "pics", T0, facts={"bucket": {}})) is None  # bucket alone


class _Restorer:
    """Records what it was asked to restore (Restorer.from_repository's shape)."""

    def __init__(self) -> None:
        self.asked: list[tuple[Record, Where | None]] = []

    async def from_repository(
        self, msg: BackupRestore, rec: Record, where: Where | None
    ) -> BackupRestored:
        self.asked.append((rec, where))
        return BackupRestored(message=f"{msg.app}'s data restored from {rec.id}")


async def test_a_cluster_bucket_is_never_restored_over_the_tree() -> None:
    fake = _Restorer()
    restorer = HostRestorer(jobs=None, restorer=fake)  # type: ignore[arg-type]
    ep, src = Endpoint("tcp://127.0.0.1:1", "k"), BackupSource(host_id="svc1", bucket_apps=["pics"])
    facts = {"manifest": {"a": [1, "h"]}, "bucket": {"o": [1, "h"]}}
    both, alone = (
        rec("data", "pics", T0, facts=facts),
        rec("data", "pics", T0, facts={"bucket": {}}),
    )
    # One machine's: the bucket (made empty by the servicehost) is filled.
    r = await restorer._one(Step("pics", "data", both), ep, src)
    assert r.ok and fake.asked[-1][0] == both and fake.asked[-1][1].bucket  # type: ignore[union-attr]
    # In the tree: the data directory alone, its bucket left as it is.
    r = await restorer._one(Step("pics", "data", both), ep, src, bucket_in_tree=True)
    got, where = fake.asked[-1]
    assert "bucket" not in got.facts and where is not None and not where.bucket
    assert r.ok and r.backup_id == both.id and TREE_KEPT in r.message
    # A backup of the bucket alone, or none at all: nothing asked, not a failure.
    for step in (Step("pics", "data", alone), Step("pics", "data", None)):
        r = await restorer._one(step, ep, src, bucket_in_tree=True)
        assert r.ok and r.message == TREE_KEPT
    assert len(fake.asked) == 2
