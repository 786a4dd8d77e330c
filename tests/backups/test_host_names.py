"""backupd names each servicehost by its id, and what an older backupd kept
under the servicehost's key name stays its own (pure).

An older backupd named servicehosts by their key's name ('servicehost' on
every host `roost cluster init` makes): its catalog records, its Barman
clusters and its platform backups' state files are under that name. After
the upgrade a one-servicehost platform's history is that servicehost's
still; of two answering by one name, a record goes to the app's holder and a
cluster to the one whose system identifier it recorded.
"""

from __future__ import annotations

from roost.backups.barmanconf import inherit
from roost.backups.catalog import Record, new_id, renamed
from roost.backups.hostrestore import choose, platform_candidates, state_file
from roost.backups.sources import old_names, source_id
from roost.wire.messages import BackupEntry, BackupKind, BackupSource

T0 = 1_780_000_000.0


def rec(kind: BackupKind, app: str, source: str, at: float = T0, **kw: object) -> Record:
    entry = BackupEntry(id=new_id(kind, at), app=app, kind=kind, taken_at=at, state="verified")
    return Record(entry=entry, source=source, snapshots={"local": "s1"}, **kw)  # type: ignore[arg-type]


def test_a_servicehost_is_named_by_its_id_and_an_older_one_by_its_key_name() -> None:
    new = BackupSource(host_id="servicehost", holder_id="10.0.0.2")
    old = BackupSource(host_id="servicehost")
    assert source_id(new) == "10.0.0.2" and source_id(old) == "servicehost"
    other = BackupSource(host_id="servicehost", holder_id="10.0.0.3")
    assert old_names([new, other, old]) == {"servicehost": ["10.0.0.2", "10.0.0.3"]}
    # One whose key is named as its host is no rename.
    assert old_names([BackupSource(host_id="svc1", holder_id="svc1")]) == {}


def test_records_under_the_key_name_go_to_its_one_servicehost() -> None:
    records = [
        rec("pgdump", "shop", "servicehost"),
        rec("pgbase", "", "servicehost"),
        rec("git", "shop", "gateway"),
        rec("data", "blog", "10.0.0.2"),  # under its id already
    ]
    out = renamed(records, {"servicehost": ["10.0.0.2"]}, lambda app: None)
    assert [(r.id, r.source) for r in out] == [
        (records[0].id, "10.0.0.2"),
        (records[1].id, "10.0.0.2"),
    ]
    assert out[0].entry == records[0].entry and out[0].snapshots == records[0].snapshots
    # Renamed once: the renamed records are left as they are.
    assert renamed(out, {"servicehost": ["10.0.0.2"]}, lambda app: None) == []


def test_of_two_alike_a_record_goes_to_the_apps_holder_and_a_base_backup_stays() -> None:
    names = {"servicehost": ["10.0.0.2", "10.0.0.3"]}
    holders = {"shop": "10.0.0.3", "gone": None}
    records = [
        rec("data", "shop", "servicehost"),
        rec("redis", "gone", "servicehost"),  # no servicehost holds it now
        rec("pgbase", "", "servicehost"),  # two clusters were one name: untold
    ]
    out = renamed(records, names, holders.get)
    assert [(r.id, r.source) for r in out] == [(records[0].id, "10.0.0.3")]


def test_a_servicehost_takes_on_the_clusters_recorded_under_its_key_name() -> None:
    history = {"servicehost": [("servicehost", "7001")]}
    # Its cluster is the one recorded: its Barman server and slot go on.
    assert inherit(history, "10.0.0.2", "servicehost", "7001", alone=False)
    # Another cluster (the other of two alike): not its.
    assert not inherit(history, "10.0.0.3", "servicehost", "7002", alone=False)
    # Not known which: only when it alone answers by the name.
    assert inherit(history, "10.0.0.2", "servicehost", "", alone=True)
    assert not inherit(history, "10.0.0.2", "servicehost", "", alone=False)
    unasked = {"servicehost": [("servicehost", "")]}
    assert inherit(unasked, "10.0.0.2", "servicehost", "7001", alone=True)
    # Nothing under the name, one of its own already, or its id is the name.
    assert not inherit({}, "10.0.0.2", "servicehost", "7001", alone=True)
    both = {**history, "10.0.0.2": [("10-0-0-2", "7003")]}
    assert not inherit(both, "10.0.0.2", "servicehost", "7001", alone=True)
    assert not inherit(history, "servicehost", "servicehost", "7001", alone=True)


def test_a_host_restore_finds_the_state_and_data_recorded_under_an_alias() -> None:
    old_platform = rec(
        "platform", "", "controller", facts={"files": {state_file("servicehost"): "0" * 64}}
    )
    new_platform = rec(
        "platform", "", "controller", at=T0 + 10, facts={"files": {state_file("10.0.0.2"): "1"}}
    )
    other = rec("platform", "", "controller", at=T0 + 20, facts={"files": {state_file("x"): "2"}})
    records = [old_platform, new_platform, other]
    assert platform_candidates(records, "10.0.0.2") == [new_platform]
    assert platform_candidates(records, "10.0.0.2", "servicehost") == [new_platform, old_platform]

    data_old = rec("data", "shop", "servicehost")
    data_other = rec("data", "blog", "10.0.0.3")
    steps = choose([data_old, data_other], "10.0.0.2", [], ["servicehost"])
    assert [(s.app, s.kind, s.record) for s in steps] == [("shop", "data", data_old)]
    assert choose([data_old, data_other], "10.0.0.2", []) == []
