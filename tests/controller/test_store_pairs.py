"""Servicehost pairs and apps' pairs in the state database (migration 0021, real SQLite)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from roost.controller.store import Store
from roost.controller.store_pairs import PairRow

P1 = PairRow("p1", ("sh1", "sh2"), ("10.0.0.1", "10.0.0.2"), 5434, 8009, 6001)
P2 = PairRow("p2", ("sh3", "sh4"), ("10.0.0.3", "10.0.0.4"), 5434, 8009, 6002)


def test_pairs_are_recorded_once_and_listed_by_name(store: Store) -> None:
    assert store.service_pairs() == []
    assert store.add_service_pair(P2)
    assert store.add_service_pair(P1)
    assert not store.add_service_pair(P1), "a pair of that name exists"
    assert store.service_pairs() == [P1, P2]


def test_an_apps_pair_is_the_first_recorded_and_goes_with_the_app(store: Store) -> None:
    store.add_service_pair(P1)
    store.add_service_pair(P2)
    app = _app(store, "app1")
    other = _app(store, "app2")
    assert store.app_pair(app) == ""
    assert store.set_app_pair(app, "p1") == "p1"
    # Another controller placing it a moment later gets the first choice.
    assert store.set_app_pair(app, "p2") == "p1"
    assert store.set_app_pair(other, "p1") == "p1"
    assert store.pair_loads() == {"p1": 2}
    store.delete_app("app2")
    assert store.pair_loads() == {"p1": 1}, "the app's row went with it"
    with pytest.raises(IntegrityError):
        store.set_app_pair(_app(store, "app3"), "nope")  # no such pair


def _app(store: Store, name: str) -> int:
    owner = store.account_by_email("o@example.com")
    owner_id = owner.id if owner else store.create_account("o@example.com")
    return store.create_app(name, owner_id).id


def test_the_pairs_of_many_apps_are_read_at_once(store: Store) -> None:
    store.add_service_pair(P1)
    one, two, alone = _app(store, "a1"), _app(store, "a2"), _app(store, "a3")
    store.set_app_pair(one, "p1")
    store.set_app_pair(two, "p1")
    assert store.app_pair_map([one, alone]) == {one: "p1"}  # a3 is on no pair
    assert store.app_pair_map() == {one: "p1", two: "p1"}
