"""Alerts sent for real: a webhook receiver started here checks the HMAC, an
SMTP server (aiosmtpd) takes the e-mail, a failing receiver is retried with
backoff (the notifier's clock is a fake one; the receivers are real)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.notifier import Notifier
from roost.controller.secretbox import SecretBox, new_key
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.conftest import free_port
from tests.controller.notifykit import Mailbox, Receiver, mailbox, receiving
from tests.migrated import migrated_sqlite

SECRET = "It's a Secret to Everybody"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as rec:
        yield rec


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    with mailbox() as box:
        yield box


class Clock:
    def __init__(self) -> None:
        self.now = time.time() + 1  # alerts are stored at the real time

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, AsyncStore]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url), secrets=SecretBox(new_key()))
    astore = AsyncStore(store)
    yield store, astore
    astore.close()


async def test_a_webhook_is_signed_as_github_signs(
    stores: tuple[Store, AsyncStore], receiver: Receiver
) -> None:
    store, astore = stores
    owner = store.create_account("o@example.com")
    store.create_app("shop", owner)
    app_id = store.app("shop").id
    store.add_notify_target(app_id, receiver.url, SECRET, trusted=True)
    store.notify_event("deploy-succeeded", "shop", "shop v3 is live", version=3)
    clock = Clock()
    notifier = Notifier(astore, Settings(), lambda: True, clock=clock)
    assert await notifier.send_due() == 1
    ((headers, body),) = receiver.got
    assert receiver.signed(SECRET)
    sent = json.loads(body)
    assert (sent["event"], sent["app"], sent["fields"]) == (
        "deploy-succeeded",
        "shop",
        {"version": 3},
    )
    assert headers["X-Roost-Event"] == "deploy-succeeded"
    (row,) = store.notify_targets()
    assert (row.delivered, row.pending) == (1, 0)
    assert await notifier.send_due() == 0  # delivered once


async def test_a_failing_receiver_is_retried_with_backoff(
    stores: tuple[Store, AsyncStore], receiver: Receiver
) -> None:
    store, astore = stores
    receiver.status = 503
    store.add_notify_target(None, receiver.url, SECRET, trusted=True)
    store.notify_event("host-down", "", "host h1 is down", host="h1")
    clock = Clock()
    settings = Settings(notify_retry_s=10.0)
    notifier = Notifier(astore, settings, lambda: True, clock=clock, jitter=lambda: 0.0)
    assert await notifier.send_due() == 1
    (row,) = store.notify_log()
    assert (row.state, row.attempts, row.next_at) == ("pending", 1, clock.now + 10)
    assert "HTTP 503" in row.last_error
    clock.now += 9
    assert await notifier.send_due() == 0  # still backing off
    clock.now += 1
    assert await notifier.send_due() == 1
    (row,) = store.notify_log()
    assert (row.attempts, row.next_at) == (2, clock.now + 20)  # twice as long
    (target,) = store.notify_targets()
    assert target.pending == 1 and "HTTP 503" in target.last_error  # shown failing
    receiver.status = 204  # it recovers
    clock.now += 20
    assert await notifier.send_due() == 1
    (row,) = store.notify_log()
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, "")
    assert len(receiver.got) == 3
    ids = {h["X-Roost-Delivery"] for h, _ in receiver.got}
    assert len(ids) == 1  # one delivery, tried three times: the receiver can tell


async def test_an_unreachable_webhook_is_accepted_and_shown_failing(
    stores: tuple[Store, AsyncStore],
) -> None:
    store, astore = stores
    store.add_notify_target(None, f"http://127.0.0.1:{free_port()}/nobody-listens", trusted=True)
    store.notify_event("disk-nearly-full", "", "servicehost sh1: 1 GiB free")
    notifier = Notifier(astore, Settings(), lambda: True, clock=Clock())
    assert await notifier.send_due() == 1
    (target,) = store.notify_targets()
    assert target.pending == 1 and "ConnectError" in target.last_error


async def test_e_mail_through_the_platform_s_server_and_a_target_s_own(
    stores: tuple[Store, AsyncStore], smtp: Mailbox
) -> None:
    store, astore = stores
    box, port = smtp, smtp.port
    store.add_notify_target(None, "mailto:ops@example.com")
    store.add_notify_target(
        None, f"smtp://127.0.0.1:{port}/dev@example.org?from=alerts@example.org", trusted=True
    )
    store.notify_event("backup-failed", "", "shop: pgdump backup FAILED: disk full", kind="pgdump")
    settings = Settings(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from="roost@example.com")
    notifier = Notifier(astore, settings, lambda: True, clock=Clock())
    assert await notifier.send_due() == 2
    got = {tuple(rcpt): msg for rcpt, msg in box.mail}
    assert set(got) == {("ops@example.com",), ("dev@example.org",)}
    ops = got[("ops@example.com",)]
    assert ops["From"] == "roost@example.com"
    assert ops["Subject"] == "[roost] backup-failed: shop: pgdump backup FAILED: disk full"
    assert "kind: pgdump" in ops.get_payload()
    assert got[("dev@example.org",)]["From"] == "alerts@example.org"
    assert all(t.delivered == 1 for t in store.notify_targets())


async def test_mailto_without_an_smtp_server_is_shown_failing(
    stores: tuple[Store, AsyncStore],
) -> None:
    store, astore = stores
    store.add_notify_target(None, "mailto:ops@example.com")
    store.notify_event("host-up", "", "host h1 is up")
    notifier = Notifier(astore, Settings(smtp_url=""), lambda: True, clock=Clock())
    await notifier.send_due()
    (target,) = store.notify_targets()
    assert "ROOST_SMTP_URL" in target.last_error


async def test_only_the_lease_holder_sends(
    stores: tuple[Store, AsyncStore], receiver: Receiver
) -> None:
    store, astore = stores
    store.add_notify_target(None, receiver.url, trusted=True)
    store.notify_event("host-up", "", "host h1 is up")
    leader, asked = False, 0
    looked_twice = asyncio.Event()

    def is_leader() -> bool:
        nonlocal asked
        asked += 1
        if asked >= 2:
            looked_twice.set()
        return leader

    task = asyncio.create_task(Notifier(astore, Settings(), is_leader).loop())
    try:
        await asyncio.wait_for(looked_twice.wait(), 30)
        assert receiver.got == []  # two rounds as a follower: nothing sent
        leader = True
        for _ in range(300):
            if store.notify_targets()[0].delivered:
                break
            await asyncio.sleep(0.1)
        assert len(receiver.got) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_member_s_target_never_reaches_inside_the_platform(
    stores: tuple[Store, AsyncStore], receiver: Receiver, smtp: Mailbox
) -> None:
    store, astore = stores
    # Added by an app's member (not trusted): a private address is refused
    # when sent to, at once and for good, and nothing reaches the receivers.
    store.add_notify_target(None, receiver.url)
    store.add_notify_target(None, receiver.url.replace("127.0.0.1", "localhost"))
    store.add_notify_target(None, f"smtp://127.0.0.1:{smtp.port}/ops@example.com")
    store.notify_event("host-down", "", "host h1 is down")
    notifier = Notifier(astore, Settings(), lambda: True, clock=Clock())
    assert await notifier.send_due() == 3
    assert receiver.got == [] and smtp.mail == []
    for row in store.notify_log():
        assert row.state == "failed" and row.attempts == 1
        assert row.last_error.startswith("refused: ") and "private address" in row.last_error
