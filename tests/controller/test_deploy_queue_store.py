"""The deploy queue's writes racing on a real database, SQLite and
PostgreSQL (read committed, where two transactions reading "nothing under
way" at once would both start a deploy without the app row's lock): many
deploys arriving at once form one line; many claims at once start one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from roost.controller.deployflow import Move
from roost.controller.store import Store

T = TypeVar("T")
N = 8


@pytest.fixture
def store(either_store: Store) -> Store:
    return either_store


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls on threads of their own, released together."""
    gate = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)

    def run(i: int) -> None:
        gate.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results  # type: ignore[return-value]


def test_deploys_arriving_at_once_form_one_line(store: Store) -> None:
    app = store.create_app("shop", store.create_account("o@example.com"))
    ids = [f"b{i}" for i in range(N)]
    ahead = at_once(
        [lambda b=b: store.enqueue_build(b, app.id, b.encode()) for b in ids]  # type: ignore[misc]
    )
    statuses = {b: store.build(b).status for b in ids}
    assert sorted(statuses.values()) == ["building"] + ["queued"] * (N - 1)
    # Each waits for a different one: a single line, its head the one building.
    waits = dict(zip(ids, ahead, strict=True))
    (head,) = [b for b, a in waits.items() if a is None]
    assert statuses[head] == "building"
    assert sorted(a for a in waits.values() if a is not None) == sorted(set(ids) - {_last(waits)})

    # The head ends; many claims at once start exactly one, the next in line.
    assert store.move_build(head, Move("building", "failed"), "boom")
    claimed = [c for c in at_once([lambda: store.claim_queued(app.id)] * N) if c is not None]
    nxt = next(b for b, a in waits.items() if a == head)
    assert claimed == [(nxt, nxt.encode())]
    assert sorted(store.build(b).status for b in ids) == (
        ["building", "failed"] + ["queued"] * (N - 2)
    )


def _last(waits: dict[str, str | None]) -> str:
    """The one no deploy waits for: the end of the line."""
    (last,) = set(waits) - {a for a in waits.values() if a is not None}
    return last
