"""Servicehosts replaced for good (controller/retired.py): what a status
push is answered with, and a survey that no longer asks them. Pure, and
with stand-ins for the store and the servicehosts' clients (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.controller.retired import REFRESH_S, Retirements, answer, drop_retired, is_retired
from roost.controller.servicehosts import HostDown, ServiceHosts, live_endpoints
from roost.controller.store_replace import RetiredRow
from roost.wire.cluster import Endpoint
from roost.wire.messages import Msg, Ok, RetiredHosts, ServiceHostStatus, ServiceHostStatusRequest

OLD = RetiredRow("10.0.0.1", "10.0.0.1", "10.0.0.5", 100.0)
EPS = [Endpoint(f"tcp://10.0.0.{i}:7010", "k" * 40) for i in (1, 2, 5)]


def test_a_push_is_answered_ok_while_none_is_retired() -> None:
    assert answer("10.0.0.2", []) == Ok()


def test_every_push_is_answered_with_the_retired_addresses() -> None:
    assert answer("10.0.0.2", [OLD]) == RetiredHosts(addresses=["10.0.0.1"])
    assert not is_retired("10.0.0.2", [OLD])


def test_the_retired_one_is_told_who_replaced_it() -> None:
    assert answer("10.0.0.1", [OLD]) == RetiredHosts(addresses=["10.0.0.1"], replaced_by="10.0.0.5")
    assert is_retired("10.0.0.1", [OLD])


def test_a_retired_ones_last_report_is_dropped() -> None:
    status = {h: ServiceHostStatus(host_id=h) for h in ("10.0.0.1", "10.0.0.2")}
    drop_retired(status, [OLD])
    assert list(status) == ["10.0.0.2"]


def test_its_endpoints_are_left_out() -> None:
    assert live_endpoints(EPS, frozenset({"10.0.0.1"})) == EPS[1:]
    assert live_endpoints(EPS, frozenset()) == EPS


class FakeClient:
    def __init__(self, ep: Endpoint, asked: list[str]) -> None:
        self.endpoints = [ep]
        self.ep = ep
        self.asked = asked

    async def call(self, msg: Msg, **_: Any) -> Msg:
        assert isinstance(msg, ServiceHostStatusRequest)
        self.asked.append(self.ep.address)
        host = self.ep.address.split("//")[1].split(":")[0]
        return ServiceHostStatus(host_id=host)


class FakeStore:
    def __init__(self) -> None:
        self.rows: list[RetiredRow] = []
        self.reads = 0

    async def retired_servicehosts(self) -> list[RetiredRow]:
        self.reads += 1
        return list(self.rows)


def test_a_survey_asks_no_retired_servicehost_and_reaches_none() -> None:
    asked: list[str] = []
    hosts = ServiceHosts(EPS, lambda ep: FakeClient(ep, asked))  # type: ignore[arg-type,return-value]
    now = [0.0]
    store = FakeStore()
    book = Retirements(clock=lambda: now[0])
    status: dict[str, ServiceHostStatus] = {}

    async def go() -> None:
        await book.refresh(store, hosts, status)  # type: ignore[arg-type]
        status.update(await hosts.survey())
        assert sorted(status) == ["10.0.0.1", "10.0.0.2", "10.0.0.5"]
        store.rows = [OLD]  # another controller replaced it
        now[0] += REFRESH_S / 2
        await book.refresh(store, hosts, status)  # type: ignore[arg-type]
        assert store.reads == 1, "read at most every REFRESH_S"
        now[0] += REFRESH_S
        await book.refresh(store, hosts, status)  # type: ignore[arg-type]
        assert store.reads == 2
        assert sorted(status) == ["10.0.0.2", "10.0.0.5"], "its last report dropped"
        asked.clear()
        assert sorted(await hosts.survey()) == ["10.0.0.2", "10.0.0.5"]
        assert "tcp://10.0.0.1:7010" not in asked
        assert "10.0.0.1" not in hosts.addresses()
        try:
            await hosts.client_of("10.0.0.1")
        except HostDown:
            pass
        else:
            raise AssertionError("a retired servicehost was reached")

    asyncio.run(go())
