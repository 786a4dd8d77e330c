from __future__ import annotations

import time
from pathlib import Path

from roost.state import leases
from roost.state.db import make_engine, migrate, sqlite_url


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = sqlite_url(tmp_path / "state.db")
    migrate(url)
    return make_engine(url)


def test_first_acquire_grants_token_one(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    lease = leases.acquire(engine, "scheduler", "a", ttl=5)
    assert lease is not None and lease.token == 1 and lease.holder == "a"


def test_other_holder_refused_until_expiry_then_token_grows(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert leases.acquire(engine, "scheduler", "a", ttl=0.3) is not None
    assert leases.acquire(engine, "scheduler", "b", ttl=5) is None
    renewed = leases.acquire(engine, "scheduler", "a", ttl=0.3)
    assert renewed is not None and renewed.token == 1  # renewal keeps the token
    time.sleep(0.4)
    taken = leases.acquire(engine, "scheduler", "b", ttl=5)
    assert taken is not None and taken.token == 2 and taken.holder == "b"
    assert leases.acquire(engine, "scheduler", "a", ttl=5) is None


def test_release_lets_successor_in_at_once(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert leases.acquire(engine, "scheduler", "a", ttl=60) is not None
    leases.release(engine, "scheduler", "a")
    taken = leases.acquire(engine, "scheduler", "b", ttl=60)
    assert taken is not None and taken.token == 2


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "state.db")
    migrate(url)
    migrate(url)
    assert leases.current(make_engine(url), "scheduler") is None
