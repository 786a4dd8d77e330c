"""A host restore's app in maintenance for its own part (HostRestoreApp),
through the controller's handler and its own state table: suspended at the
start, resumed at the end when it came back whole, left suspended (and the
event log saying how to end it) when it did not, and an app its owner had
suspended before left as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.hostsuspend import end_event, resume_at_end
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import APP_SUSPENDED, HostRestoreApp, Ok
from tests.migrated import migrated_sqlite


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ControllerService, Store]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    service = ControllerService(Controller(AsyncStore(store), Settings(), "c1"), None, None)
    yield service, store
    service.c.store.close()


def start(app: str) -> HostRestoreApp:
    return HostRestoreApp(host="svc1", app=app, starting=True)


def end(
    app: str, resume: bool, ok: bool, message: str = "database from pgdump-1"
) -> HostRestoreApp:
    return HostRestoreApp(
        host="svc1", app=app, starting=False, resume=resume, ok=ok, message=message
    )


def test_only_what_the_restore_suspended_and_came_back_whole_is_resumed() -> None:
    assert resume_at_end(suspended_by_restore=True, ok=True)
    assert not resume_at_end(suspended_by_restore=True, ok=False)  # the operator decides
    assert not resume_at_end(suspended_by_restore=False, ok=True)  # its owner's suspension
    assert not resume_at_end(suspended_by_restore=False, ok=False)


def test_the_end_event_names_the_outcome_and_how_maintenance_ends() -> None:
    assert end_event(end("shop", True, True), resumed=True, suspended=True) == (
        "backup-restored",
        "shop: host restore onto svc1: database from pgdump-1",
    )
    kind, text = end_event(end("shop", True, False, "database not restored: x"), False, True)
    assert kind == "backup-restore-failed"
    assert text.endswith("x; it stays in maintenance until `roost resume --app shop`")
    # not suspended (the controller was not reached at the start): nothing to end
    kind, text = end_event(end("shop", False, False, "Redis not restored: y"), False, False)
    assert (kind, text) == (
        "backup-restore-failed",
        "shop: host restore onto svc1: Redis not restored: y",
    )


@pytest.mark.parametrize("ok", [True, False])
async def test_an_app_is_in_maintenance_for_its_part_and_serves_after_only_if_back(
    setup: tuple[ControllerService, Store], ok: bool
) -> None:
    service, store = setup
    owner = store.create_account_hashed("a@example.com", "x")
    shop = store.create_app("shop", owner)
    assert await service.handle(start("shop")) == Ok(detail=APP_SUSPENDED)
    assert store.app("shop").suspended
    assert await service.handle(end("shop", True, ok, "database: not restored")) == Ok()
    assert store.app("shop").suspended is not ok  # one not back stays for an operator
    kinds = [(e.kind, e.app_id) for e in reversed(store.events())]
    after = [("resume", shop.id), ("backup-restored", shop.id)]
    assert kinds == [("suspend", shop.id)] + (after if ok else [("backup-restore-failed", shop.id)])
    if not ok:
        assert "roost resume --app shop" in store.events()[0].message


async def test_an_app_suspended_before_stays_so_and_an_unknown_one_is_passed_over(
    setup: tuple[ControllerService, Store],
) -> None:
    service, store = setup
    owner = store.create_account_hashed("a@example.com", "x")
    blog = store.create_app("blog", owner)
    store.set_suspended(blog.id, True)
    assert await service.handle(start("blog")) == Ok()  # it did not suspend it
    assert await service.handle(end("blog", False, True)) == Ok()
    assert store.app("blog").suspended
    assert await service.handle(start("gone")) == Ok()
    assert await service.handle(end("gone", False, True)) == Ok()
    assert [e.kind for e in store.events()] == ["backup-restored"]
