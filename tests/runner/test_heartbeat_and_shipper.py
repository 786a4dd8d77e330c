"""Heartbeat replies and log shipping against fake clients (no sockets)."""

from __future__ import annotations

import asyncio
import os

import pytest

from roost.runner import plan as P
from roost.runner.fencing import Held
from roost.runner.heartbeat import (
    EarlyBeats,
    HeartbeatLoop,
    build_heartbeat,
    sum_trees,
    tree_memory_mb,
)
from roost.runner.logbuffer import LogBuffer
from roost.runner.model import Record
from roost.runner.shipper import LogShipper
from roost.wire.messages import Assignment, Heartbeat, HeartbeatReply, LogBatch, LogLine, Msg, Ok
from roost.wire.rpc import RemoteError, RpcTimeout
from tests.runner.helpers import assignment


class FakeControllers:
    def __init__(self) -> None:
        self.replies: list[Msg | BaseException] = []
        self.sent: list[Heartbeat] = []

    async def call_all(self, msg: Msg, timeout: float = 5.0) -> list[Msg | BaseException]:
        assert isinstance(msg, Heartbeat)
        self.sent.append(msg)
        return list(self.replies)


def loop_with(
    fake: FakeControllers, records: list[Record], accepted: list[Assignment]
) -> HeartbeatLoop:
    return HeartbeatLoop(
        client=fake,
        host_id="h1",
        bind_host="127.0.0.1",
        interval=1.0,
        records=lambda: records,
        changed=asyncio.Event(),
        on_assignment=accepted.append,
    )


async def test_heartbeat_reports_instances_and_converges_to_the_newest_assignment() -> None:
    rec = P.marked_up(
        P.started(
            Record(assignment=assignment("i1"), process_name="web.1"),
            pid=os.getpid(),
            now=0.0,
            wall=1000.0,
            command="python server.py",
            port=5000,
            unix_socket="/s.sock",
        ),
        1.0,
    )
    fake, accepted = FakeControllers(), list[Assignment]()
    hb = loop_with(fake, [rec], accepted)
    newer = Assignment(host_id="h1", fence=3, version=7, instances=[assignment("i1")])
    fake.replies = [
        HeartbeatReply(assignment=newer),
        RpcTimeout("replica 2 is down"),
        HeartbeatReply(),
    ]
    await hb.beat()
    sent = fake.sent[0]
    assert (
        sent.host_id == "h1"
        and sent.addresses[0] == "127.0.0.1"
        and (sent.fence, sent.version) == (0, 0)
    )
    (status,) = sent.instances
    assert (status.instance_id, status.state, status.port, status.unix_socket) == (
        "i1",
        "up",
        5000,
        "/s.sock",
    )
    assert status.pid == os.getpid() and status.memory_mb > 0 and status.started_at == 1000.0
    assert accepted == [newer] and hb.held == Held(3, 7) and hb.reachable is True

    # Next beat reports what it holds; a stale leader is refused, the same one is not re-applied.
    stale = Assignment(host_id="h1", fence=2, version=50, instances=[])
    fake.replies = [HeartbeatReply(assignment=stale), HeartbeatReply(assignment=newer)]
    await hb.beat()
    assert (fake.sent[1].fence, fake.sent[1].version) == (3, 7)
    assert accepted == [newer] and hb.held == Held(3, 7)


async def test_heartbeat_without_any_controller_changes_nothing() -> None:
    fake, accepted = FakeControllers(), list[Assignment]()
    hb = loop_with(fake, [], accepted)
    fake.replies = [RpcTimeout("down"), RpcTimeout("down too")]
    await hb.beat()
    assert hb.reachable is False and accepted == [] and hb.held == Held()


def test_early_beats_go_at_once_in_a_burst_and_at_most_ten_a_second_after() -> None:
    """A rollout's changes each beat at once (a fixed 0.1 s gap after every
    beat held the second of two instances up 20 ms apart); churn is capped."""
    early = EarlyBeats()
    for at in (100.0, 100.02, 100.04):  # a new assignment, then web.1 and web.2 up
        assert early.wait_s(at) == 0.0
        early.spend(at)
    assert early.wait_s(100.06) == pytest.approx(0.04)  # spent: 0.6 of one earned back
    now, beats = 100.06, 0
    while now < 110.06:  # something changes all the time, for ten seconds
        now += early.wait_s(now)
        early.spend(now)
        beats += 1
        now += 0.001
    assert 95 <= beats <= 101
    assert early.wait_s(now + 1.0) == 0.0  # a quiet second later: at once again


def test_tree_sums_cover_every_descendant() -> None:
    rss = {1: 100, 2: 10, 3: 1, 4: 1000, 5: 7}
    parent = {1: 0, 2: 1, 3: 2, 4: 0, 5: 1}
    assert sum_trees([1, 2, 4, 9], rss, parent) == {1: 118, 2: 11, 4: 1000, 9: 0}


def test_build_heartbeat_and_tree_memory() -> None:
    mine = tree_memory_mb([os.getpid(), 2**22 + 12345, 0])
    assert mine[os.getpid()] > 0
    assert mine[2**22 + 12345] == 0.0 and 0 not in mine  # no such process; no pid
    hb = build_heartbeat(
        host_id="h",
        hostname="n",
        addresses=["10.0.0.1"],
        records=[],
        held=Held(4, 2),
        memory={},
        now=5.0,
    )
    assert (hb.fence, hb.version, hb.sent_at, hb.instances) == (4, 2, 5.0, [])
    assert hb.memory_mb > 0 and hb.cpus >= 1


class FakeSender:
    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = outcomes
        self.delivered: list[list[str]] = []

    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        assert isinstance(msg, LogBatch)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.delivered.append([x.line for x in msg.lines])
        return Ok()


def line(text: str) -> LogLine:
    return LogLine(app="demo", ts=0.0, source="app", process="web.1", line=text)


async def test_shipper_requeues_on_timeout_and_sends_in_order() -> None:
    sender = FakeSender([RpcTimeout("down"), asyncio.CancelledError(), None])
    shipper = LogShipper(sender, LogBuffer(100, lambda: 0.0), batch_lines=2)
    for i in range(3):
        shipper.emit(line(f"l{i}"))
    assert await shipper.flush() is False and shipper.failures == 1
    # A CancelledError this task did not ask for (a client socket reset) is a failure too.
    assert await shipper.flush() is False and shipper.failures == 2
    assert await shipper.flush() is True and shipper.failures == 0
    assert sender.delivered == [["l0", "l1"], ["l2"]]


async def test_shipper_drops_a_refused_batch_and_goes_on() -> None:
    sender = FakeSender([RemoteError("bad batch"), None])
    shipper = LogShipper(sender, LogBuffer(100, lambda: 0.0), batch_lines=1)
    shipper.emit(line("a"))
    shipper.emit(line("b"))
    assert await shipper.flush() is True
    assert sender.delivered == [["b"]]


async def test_shipper_run_sends_full_batches_without_waiting_for_the_period() -> None:
    sender = FakeSender([])
    shipper = LogShipper(sender, LogBuffer(100, lambda: 0.0), batch_lines=3, period=3600)
    task = asyncio.create_task(shipper.run())
    try:
        await asyncio.sleep(0)
        for i in range(3):
            shipper.emit(line(f"l{i}"))
        for _ in range(100):
            if sender.delivered:
                break
            await asyncio.sleep(0.01)
        assert sender.delivered == [["l0", "l1", "l2"]]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
