"""The state database's async face: a slow query never holds up a heartbeat.

Every statement on the store's engine can be held on a gate (a SQLAlchemy
`before_cursor_execute` hook, as the latency bench uses). While an API
request sits blocked in the database, a runner's first heartbeat (the one
that makes the controller record a new host) is still answered, with its
assignment; the host is written once the database answers again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.leases import Lease
from roost.wire.messages import Heartbeat, HeartbeatReply

# How long a held statement waits for its gate before going on anyway: a
# controller that (wrongly) waits for the database must fail the test, not hang it.
HOLD_S = 5.0


class Gate:
    """Holds every statement on an engine while closed; counts those held now."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.held = 0
        self.gave_up = 0
        self.threads: set[str] = set()
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def hook(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.statements.append(statement)
        if self.open.is_set():
            return
        with self._lock:
            self.held += 1
        self.entered.set()
        try:
            if not self.open.wait(HOLD_S):
                self.gave_up += 1  # nobody opened it: the test was waiting on it
        finally:
            with self._lock:
                self.held -= 1


@pytest.fixture
def gate(store: Store) -> Iterator[Gate]:
    g = Gate()
    event.listen(store.engine, "before_cursor_execute", g.hook)
    yield g
    g.open.set()
    event.remove(store.engine, "before_cursor_execute", g.hook)


@pytest.fixture
def controller(store: Store) -> Iterator[Controller]:
    c = Controller(AsyncStore(store), Settings(), "test")
    c.services = ServiceBroker(c.store, SecretBox(b"k" * 32), None)
    # Holding the lease: its heartbeat replies carry assignments.
    c._lease_result(Lease("scheduler", c.holder_id, 7, 0.0), time.monotonic(), 60.0)
    yield c
    c.store.close()


async def test_a_heartbeat_is_answered_while_the_database_hangs(
    store: Store, gate: Gate, controller: Controller
) -> None:
    token = store.issue_token(store.create_account("dev@example.com"))
    service = ControllerService(controller, builders=None)
    controller.book.update([], lambda p: None, ["h1"])  # a pass made h1's assignment
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_api(controller, service)),
        base_url="http://controller",
        headers={"Authorization": f"Bearer {token}"},
    )
    gate.threads.clear()  # from here on, only the controller queries
    gate.statements.clear()
    async with api:
        gate.open.clear()
        request = asyncio.create_task(api.get("/api/apps"))
        assert await asyncio.to_thread(gate.entered.wait, HOLD_S), "the request never queried"
        try:
            reply = await service.handle(
                Heartbeat(host_id="h1", hostname="node-1", addresses=["10.0.0.1"], cpus=2)
            )
            still_held = gate.held
            answered_before_request = not request.done()
        finally:
            gate.open.set()
        assert isinstance(reply, HeartbeatReply)
        assert reply.assignment is not None and reply.assignment.fence == 7
        # Answered while the request's query was still held in the database,
        # and without waiting for any statement to be let through.
        assert still_held >= 1 and answered_before_request and gate.gave_up == 0
        assert (await request).status_code == 200
        assert not any("hosts" in q for q in gate.statements)
    assert controller.soft.alive("h1")
    await controller.hosts_heard.record()
    # Every statement ran on the store's own threads, none on the event loop's.
    assert gate.threads and all(n.startswith("roost-state") for n in gate.threads)
    # The host was written by the hosts loop's call, not by the heartbeat.
    (row,) = store.hosts()
    assert (row.id, row.hostname, row.cpus) == ("h1", "node-1", 2)


async def test_hosts_heard_are_kept_when_writing_them_fails(
    store: Store, controller: Controller
) -> None:
    for i in (1, 2):
        controller.hosts_heard.note(Heartbeat(host_id=f"h{i}", hostname=f"node-{i}", memory_mb=i))
    store.engine.dispose()
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE hosts RENAME TO hosts_away")
    with pytest.raises(Exception, match="hosts"):
        await controller.hosts_heard.record()
    # Heard again meanwhile: the newer heartbeat's record wins.
    controller.hosts_heard.note(Heartbeat(host_id="h2", hostname="node-2", memory_mb=99))
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE hosts_away RENAME TO hosts")
    await controller.hosts_heard.record()
    assert sorted((r.id, r.memory_mb) for r in store.hosts()) == [("h1", 1), ("h2", 99)]
    # Written once: a second call has nothing to write, and an existing host is updated.
    await controller.hosts_heard.record()
    controller.hosts_heard.note(Heartbeat(host_id="h1", hostname="renamed", memory_mb=5))
    await controller.hosts_heard.record()
    assert [(r.id, r.hostname) for r in store.hosts()] == [("h1", "renamed"), ("h2", "node-2")]


async def test_a_new_holder_sends_no_assignment_before_it_has_made_one(
    controller: Controller,
) -> None:
    """Just after taking the lease (a controller restarted) the holder has no
    assignment for a host: an empty one under its higher fence would make the
    runner stop every instance until the first pass."""
    service = ControllerService(controller, builders=None)
    beat = Heartbeat(host_id="h1", hostname="node-1", addresses=["10.0.0.1"], fence=6, version=3)
    reply = await service.handle(beat)
    assert isinstance(reply, HeartbeatReply) and reply.assignment is None
    controller.book.update([], lambda p: None, ["h1"])
    reply = await service.handle(beat)
    assert isinstance(reply, HeartbeatReply) and reply.assignment is not None
    assert (reply.assignment.fence, reply.assignment.version) == (7, 1)
