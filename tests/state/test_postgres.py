"""The state database on PostgreSQL: migrations and leases on the server's clock."""

from __future__ import annotations

import threading
import time

from roost.controller.store import Store
from roost.state import leases
from roost.state.db import make_engine, migrate
from tests.pgserver import postgres_server


def test_migrations_and_leases_on_postgresql() -> None:
    with postgres_server() as url:
        migrate(url)
        migrate(url)  # idempotent
        engine = make_engine(url)
        try:
            first = leases.acquire(engine, "scheduler", "a", ttl=0.5)
            assert first is not None and first.token == 1
            assert leases.acquire(engine, "scheduler", "b", ttl=5) is None
            time.sleep(0.7)
            second = leases.acquire(engine, "scheduler", "b", ttl=5)
            assert second is not None and second.token == 2

            # Concurrent contenders: exactly one wins each round.
            winners: list[str] = []

            def contend(name: str) -> None:
                if leases.acquire(engine, "race", name, ttl=30) is not None:
                    winners.append(name)

            threads = [threading.Thread(target=contend, args=(f"c{i}",)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(winners) == 1

            store = Store(engine)
            owner = store.create_account("pg@example.com")
            store.create_app("on-pg", owner)
            assert [a.name for a in store.apps()] == ["on-pg"]
        finally:
            engine.dispose()


def test_concurrent_migrations_take_turns() -> None:
    with postgres_server() as url:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                migrate(url)
            except BaseException as exc:  # recorded and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        engine = make_engine(url)
        try:
            assert leases.acquire(engine, "scheduler", "x", ttl=1) is not None
        finally:
            engine.dispose()
