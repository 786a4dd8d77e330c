"""An app a restore suspended is resumed once the restore is over, by
whichever controller holds the lease (roost.controller.restorehold):
HoldWatch's decisions with a fake clock and no sockets, and the records in
a real state database (SQLite and PostgreSQL), where a user's suspension
is never undone by a restore's end."""

from __future__ import annotations

import pytest

from roost.controller.restorehold import HoldWatch
from roost.controller.store import Store
from roost.controller.store_holds import HoldRow

HOLD = HoldRow(app_id=1, app="shop", restore_id="r1", since=0.0)
OTHER = HoldRow(app_id=2, app="blog", restore_id="r2", since=0.0)


def released(watch: HoldWatch, now: float, *holds: HoldRow, **answers: object) -> list[str]:
    got = watch.look(now, list(holds), answers)  # type: ignore[arg-type]
    return [r.hold.app for r in got]


def test_a_restore_a_backupd_runs_keeps_its_app_suspended_however_long() -> None:
    watch = HoldWatch(silent_s=120)
    for now in (0.0, 500.0, 86_400.0):
        assert released(watch, now, HOLD, a=frozenset({"r1"}), b=frozenset()) == []


def test_a_restore_no_backupd_runs_is_over_and_its_app_resumed() -> None:
    watch = HoldWatch(silent_s=120)
    (r,) = watch.look(0.0, [HOLD, OTHER], {"a": frozenset({"r2"}), "b": frozenset()})
    assert r.hold == HOLD and r.why == "it is over"


def test_a_silent_backupd_may_run_it_until_silent_for_long_enough() -> None:
    """Silence counts from the watch's first survey (a new lease holder
    cannot know how long it was silent before)."""
    watch = HoldWatch(silent_s=120)
    assert released(watch, 1000.0, HOLD, a=None, b=frozenset()) == []
    assert released(watch, 1119.0, HOLD, a=None, b=frozenset()) == []
    (r,) = watch.look(1120.0, [HOLD], {"a": None, "b": frozenset()})
    assert r.why == "no backupd runs it (a silent for 120 s)"


def test_a_backupd_that_answers_again_starts_a_new_silence() -> None:
    watch = HoldWatch(silent_s=120)
    assert released(watch, 0.0, HOLD, a=None) == []
    assert released(watch, 100.0, HOLD, a=frozenset({"r1"})) == []  # back, running it
    assert released(watch, 200.0, HOLD, a=None) == []  # silent 100 s, not 200
    assert released(watch, 220.0, HOLD, a=None) == ["shop"]


def test_a_restore_listed_by_one_backupd_waits_even_when_another_is_silent() -> None:
    watch = HoldWatch(silent_s=10)
    assert released(watch, 0.0, HOLD, a=None, b=frozenset({"r1"})) == []
    assert released(watch, 100.0, HOLD, a=None, b=frozenset({"r1"})) == []


def test_without_a_backupd_nothing_can_be_running() -> None:
    (r,) = HoldWatch().look(0.0, [HOLD], {})
    assert "none is configured" in r.why


# ------------------------------------------------------------ the records


@pytest.fixture
def store(either_store: Store) -> Store:
    return either_store


def _app(store: Store) -> int:
    owner = store.create_account("shop@example.com")
    return store.create_app("shop", owner).id


def test_a_restores_suspension_is_recorded_and_its_end_resumes_the_app(store: Store) -> None:
    app_id = _app(store)
    assert store.suspend_for_restore(app_id, "shop", "r1", 5.0)
    assert store.app("shop").suspended
    assert store.restore_holds() == [HoldRow(app_id, "shop", "r1", 5.0)]
    assert store.release_hold(app_id, "shop", "r0") == "none"  # another restore's end
    assert store.app("shop").suspended
    assert store.release_hold(app_id, "shop", "r1") == "resumed"
    assert not store.app("shop").suspended and store.restore_holds() == []
    assert store.release_hold(app_id, "shop", "r1") == "none"  # a second end: nothing


def test_an_app_a_user_suspended_is_not_the_restores_to_resume(store: Store) -> None:
    app_id = _app(store)
    store.set_suspended(app_id, True)  # `roost suspend`
    assert not store.suspend_for_restore(app_id, "shop", "r1", 5.0)
    assert store.restore_holds() == []
    assert store.release_hold(app_id, "shop") == "none"
    assert store.app("shop").suspended


@pytest.mark.parametrize("user_sets", [True, False])
def test_a_user_who_touches_the_suspension_during_the_restore_wins(
    store: Store, user_sets: bool
) -> None:
    """Suspended again by hand (or resumed, then suspended by hand): the
    restore's end deletes its record and leaves the app as the user set it."""
    app_id = _app(store)
    assert store.suspend_for_restore(app_id, "shop", "r1", 5.0)
    store.set_suspended(app_id, user_sets)
    assert store.restore_holds()[0].by_user
    if user_sets:  # the user's suspension is passed to no later restore either
        assert not store.suspend_for_restore(app_id, "shop", "r2", 6.0)
    assert store.release_hold(app_id, "shop", "r1") == "user"
    assert store.app("shop").suspended is user_sets and store.restore_holds() == []


def test_a_second_restore_takes_over_a_suspension_the_first_left(store: Store) -> None:
    app_id = _app(store)
    assert store.suspend_for_restore(app_id, "shop", "r1", 5.0)
    assert store.suspend_for_restore(app_id, "shop", "r2", 6.0)
    assert store.release_hold(app_id, "shop", "r1") == "none"  # the first's end
    assert store.app("shop").suspended
    assert store.release_hold(app_id, "shop", "r2") == "resumed"


def test_a_deleted_app_leaves_no_record(store: Store) -> None:
    app_id = _app(store)
    assert store.suspend_for_restore(app_id, "shop", "r1", 5.0)
    store.delete_app("shop")
    assert store.restore_holds() == []
