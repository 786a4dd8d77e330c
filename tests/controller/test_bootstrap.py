"""The controller makes the admin account and writes its token to
DATA/controller/admin.token (roost.controller.bootstrap); the CLI only reads
that file. A real Store on SQLite; no sockets."""

from __future__ import annotations

import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from roost.controller.admintoken import (
    ADMIN_EMAIL,
    admin_token_path,
    read_admin_token,
    write_admin_token,
)
from roost.controller.bootstrap import NotAdmin, bootstrap_admin
from roost.controller.store import Store
from roost.state import tables as t
from roost.state.db import make_engine, migrate
from tests.conftest import wait_until
from tests.pgserver import postgres_server


def test_first_start_makes_the_admin_and_a_private_token_file(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert read_admin_token(data) == ""
    token = bootstrap_admin(store, data, "ctl1")
    assert read_admin_token(data) == token and token.startswith("rst_")
    admin = store.account_by_email(ADMIN_EMAIL)
    assert admin is not None and admin.is_admin
    assert store.account_for_token(token).id == admin.id
    path = admin_token_path(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_restart_keeps_a_working_token_and_replaces_a_revoked_or_foreign_one(
    store: Store, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = bootstrap_admin(store, data, "ctl1")
    assert bootstrap_admin(store, data, "ctl1") == first
    admin = store.account_by_email(ADMIN_EMAIL)
    (row,) = store.tokens(admin.id)
    store.revoke_token(admin.id, row.id)
    second = bootstrap_admin(store, data, "ctl1")
    assert second != first and store.account_for_token(second).id == admin.id
    # A working token of another account in the file is not the admin's.
    other = store.create_account("someone@example.com")
    admin_token_path(data).write_text(store.issue_token(other) + "\n")
    third = bootstrap_admin(store, data, "ctl1")
    assert store.account_for_token(third).id == admin.id
    # A second controller's host gets its own token of the same admin.
    elsewhere = bootstrap_admin(store, tmp_path / "ctl2", "ctl2")
    assert elsewhere != third and store.account_for_token(elsewhere).id == admin.id


def test_a_registered_user_named_like_the_admin_is_not_promoted(
    store: Store, tmp_path: Path
) -> None:
    store.create_account(ADMIN_EMAIL, password="a-password-1")
    with pytest.raises(NotAdmin):
        bootstrap_admin(store, tmp_path / "data", "ctl1")
    assert not store.account_by_email(ADMIN_EMAIL).is_admin
    assert read_admin_token(tmp_path / "data") == ""


def test_controllers_making_the_admin_at_once_both_get_it(tmp_path: Path) -> None:
    """Three controllers of a new cluster start together: one makes the admin
    account while another has looked and found none. The other's insert waits
    on the unique index and loses; it must take the account made, not crash
    (a cluster test's second controller exited 70 on the IntegrityError).
    Real PostgreSQL: SQLite's lock serialises the two and hides it."""
    with postgres_server() as url:
        migrate(url)
        store = Store(make_engine(url))
        try:
            with store.engine.connect() as holder:
                holder.begin()
                holder.execute(
                    insert(t.accounts).values(
                        email=ADMIN_EMAIL, password_hash="", is_admin=True, created_at=time.time()
                    )
                )
                with ThreadPoolExecutor(1) as pool:
                    other = pool.submit(bootstrap_admin, store, tmp_path / "data", "ctl2")
                    # The other controller's insert is waiting on ours.
                    wait_until(lambda: _lock_waiters(store) == 1, 30, "the second insert to wait")
                    holder.commit()
                    token = other.result(timeout=30)
            admin = store.account_by_email(ADMIN_EMAIL)
            assert store.account_for_token(token).id == admin.id
        finally:
            store.engine.dispose()


def _lock_waiters(store: Store) -> int:
    with store.engine.connect() as c:
        return int(
            c.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
        )


def test_two_controllers_sharing_data_write_the_token_file_at_once(tmp_path: Path) -> None:
    """Two controllers of one DATA (a host running two, as the cron test
    does) write the token file side by side: neither fails, the file holds
    one of their tokens whole, and no temporary file is left. With one fixed
    temporary name the first rename took the other's file away (the second
    controller exited on FileNotFoundError)."""
    data = tmp_path / "data"
    start = threading.Barrier(2)

    def write(who: str) -> None:
        start.wait()
        for i in range(300):
            write_admin_token(data, f"rst_{who}_{i}")

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(write, w) for w in ("a", "b")]:
            f.result(timeout=60)
    assert read_admin_token(data) in {"rst_a_299", "rst_b_299"}
    assert sorted(p.name for p in admin_token_path(data).parent.iterdir()) == ["admin.token"]
    assert stat.S_IMODE(admin_token_path(data).stat().st_mode) == 0o600
