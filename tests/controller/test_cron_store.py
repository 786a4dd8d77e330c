"""Cron claims in a real state database (SQLite and PostgreSQL): taken only
under the lease, moved only by their owner's token, output logged once."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy
from alembic import command

from roost.controller import cron
from roost.controller.cron import Claim, Fence, Job, NewClaim
from roost.controller.store import Store
from roost.state import leases
from roost.state.db import alembic_config, make_engine, migrate, sqlite_url

LEASE = "scheduler"


@pytest.fixture
def store(either_store: Store) -> Store:
    return either_store


def holder(store: Store, name: str) -> Fence:
    lease = leases.acquire(store.engine, LEASE, name, 60)
    assert lease is not None
    return Fence(LEASE, name, lease.token)


def app_job(store: Store) -> Job:
    owner = store.create_account("cron@example.com")
    app = store.create_app("clock", owner)
    return Job("clock", "./tick", "* * * * *", app_id=app.id)


def cron_log(store: Store) -> list[str]:
    with store.engine.connect() as c:
        rows = c.execute(
            sqlalchemy.text("SELECT line FROM log_lines WHERE source = 'cron' ORDER BY id")
        )
        return [r.line for r in rows]


def test_a_slot_is_claimed_once_and_only_under_the_lease(store: Store) -> None:
    job = app_job(store)
    a = holder(store, "a")
    assert store.claim_cron(a, NewClaim(job, 10, cron.CLAIMED))
    assert not store.claim_cron(a, NewClaim(job, 10, cron.CLAIMED))
    # Not the lease's token (a deposed holder): nothing is claimed.
    assert not store.claim_cron(Fence(LEASE, "a", a.token + 1), NewClaim(job, 11, cron.CLAIMED))
    assert not store.claim_cron(Fence(LEASE, "b", a.token), NewClaim(job, 11, cron.CLAIMED))
    assert store.claim_cron(a, NewClaim(job, 12, cron.FINISHED, cron.SKIPPED))
    [claimed, skipped] = sorted(store.cron_claims(0), key=lambda c: c.slot)
    assert (claimed.slot, claimed.fence, claimed.state) == (10, a.token, cron.CLAIMED)
    assert (skipped.state, skipped.status) == (cron.FINISHED, cron.SKIPPED)
    assert cron_log(store) == ["cron: './tick' skipped"]
    # Finished claims before the window are not read again; open ones always are.
    assert [c.slot for c in store.cron_claims(13)] == [10]


def test_a_successor_adopts_and_the_predecessor_is_refused(store: Store) -> None:
    job = app_job(store)
    a = holder(store, "a")
    store.claim_cron(a, NewClaim(job, 10, cron.CLAIMED))
    [seen] = store.cron_claims(0)
    # A holder that does not hold the lease cannot adopt.
    assert store.adopt_cron(Fence(LEASE, "b", a.token + 1), seen, cron.CLAIMED) is None
    leases.release(store.engine, LEASE, "a")  # as if it had expired: A is deposed
    b = holder(store, "b")
    assert b.token > a.token
    adopted = store.adopt_cron(b, seen, cron.CLAIMED)
    assert adopted is not None and adopted.fence == b.token
    # What A still tries with its token changes nothing and logs nothing.
    assert not store.start_cron(a.token, seen, "r1", "s-a", "cron: running (A)")
    assert not store.finish_cron(a.token, seen.key, cron.SUCCEEDED, [("stdout", "A done")])
    # A second adoption from the same reading fails: the row moved.
    assert store.adopt_cron(b, seen, cron.CLAIMED) is None
    assert store.start_cron(b.token, adopted, "r1", "s-b", "cron: running (B)")
    [row] = store.cron_claims(0)
    assert (row.state, row.runner, row.session) == (cron.STARTED, "r1", "s-b")
    assert row.started_at is not None
    assert cron_log(store) == ["cron: running (B)"]


def test_output_is_logged_with_its_position_and_finished_once(store: Store) -> None:
    job = app_job(store)
    a = holder(store, "a")
    store.claim_cron(a, NewClaim(job, 10, cron.CLAIMED))
    [claimed] = store.cron_claims(0)
    store.start_cron(a.token, claimed, "r1", "s", "cron: running")
    key = claimed.key
    assert store.cron_output(a.token, key, 3, {"stdout": b"par"}, 2, [("stdout", "one")])
    [row] = store.cron_claims(0)
    assert (row.out_seq, row.out_tail, row.out_lines) == (3, {"stdout": b"par"}, 2)
    assert not store.cron_output(a.token + 1, key, 4, {}, 3, [("stdout", "not mine")])
    assert store.finish_cron(a.token, key, cron.SUCCEEDED, [("stdout", "tial")], 0)
    assert not store.finish_cron(a.token, key, cron.FAILED, [("stdout", "again")], 1)
    [row] = store.cron_claims(0)
    assert (row.state, row.status) == (cron.FINISHED, cron.SUCCEEDED)
    assert cron_log(store) == ["cron: running", "one", "tial"]
    store.prune_cron(11)
    assert store.cron_claims(0) == []


def test_claims_made_before_states_existed_are_taken_as_finished(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    engine = make_engine(url)
    store = Store(engine)
    # The app made by this code's store (on the schema it knows), then the
    # database taken back to 0009, before claims had states.
    migrate(url)
    job = app_job(store)
    command.downgrade(alembic_config(url), "0009")
    with engine.begin() as c:
        for slot, status in ((1, "claimed"), (2, "succeeded")):
            c.execute(
                sqlalchemy.text(
                    "INSERT INTO cron_claims (app_id, job, slot, claimed_by, claimed_at, status) "
                    "VALUES (:a, :j, :s, 'old', 0, :st)"
                ),
                {"a": job.app_id, "j": job.key, "s": slot, "st": status},
            )
    migrate(url)
    got = sorted(store.cron_claims(0), key=lambda c: c.slot)
    assert [(c.state, c.status, c.fence) for c in got] == [
        (cron.FINISHED, "unknown", 0),
        (cron.FINISHED, cron.SUCCEEDED, 0),
    ]
    assert all(isinstance(c, Claim) for c in got)
    engine.dispose()
