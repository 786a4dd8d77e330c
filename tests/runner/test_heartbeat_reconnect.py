"""A runner cut off from every controller knocks faster, so a heal is noticed soon."""

from __future__ import annotations

import asyncio

from roost.runner.heartbeat import UNREACHABLE_TIMEOUT_S, HeartbeatLoop
from roost.wire.messages import Assignment, HeartbeatReply, Msg
from roost.wire.rpc import RpcTimeout


class Controllers:
    def __init__(self) -> None:
        self.up = True
        self.version = 1
        self.timeouts: list[float] = []

    async def call_all(self, msg: Msg, timeout: float = 5.0) -> list[Msg | BaseException]:
        self.timeouts.append(timeout)
        if not self.up:
            return [RpcTimeout("silence"), RpcTimeout("silence")]
        return [
            HeartbeatReply(
                assignment=Assignment(host_id="h1", fence=2, version=self.version, instances=[])
            )
        ]


async def test_timeout_shortens_while_cut_off_and_recovers_after() -> None:
    ctl = Controllers()
    got: list[Assignment] = []
    loop = HeartbeatLoop(
        client=ctl,
        host_id="h1",
        bind_host="127.0.0.1",
        interval=1.0,
        records=list,
        changed=asyncio.Event(),
        on_assignment=got.append,
    )
    await loop.beat()
    assert loop.reachable is True and ctl.timeouts[-1] == 1.0
    ctl.up = False
    await loop.beat()  # the first silent beat still waits the full timeout
    assert loop.reachable is False and ctl.timeouts[-1] == 1.0
    await loop.beat()
    assert ctl.timeouts[-1] == UNREACHABLE_TIMEOUT_S < 1.0
    ctl.up, ctl.version = True, 2  # healed; the work moved meanwhile
    await loop.beat()  # the next (quick) beat gets the new assignment and applies it
    assert loop.reachable is True and [a.version for a in got] == [1, 2]
    await loop.beat()
    assert ctl.timeouts[-1] == 1.0


async def test_a_stop_that_coincides_with_a_state_change_still_stops_the_loop() -> None:
    # Stopping a runner stops its instances, which sets `changed` just as the
    # heartbeat task is cancelled. (With asyncio.wait_for on Python 3.11 the
    # cancellation was lost there and the runner never exited.)
    changed = asyncio.Event()
    loop = HeartbeatLoop(
        client=Controllers(),
        host_id="h1",
        bind_host="127.0.0.1",
        interval=5.0,
        records=list,
        changed=changed,
        on_assignment=lambda a: None,
    )
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.3)  # past the first beat, waiting for a change
    changed.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done and task.cancelled()


async def test_the_log_shipper_stops_even_as_lines_arrive() -> None:
    from roost.runner.logbuffer import LogBuffer
    from roost.runner.shipper import LogShipper
    from roost.wire.messages import LogLine, Ok

    class Sink:
        async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
            return Ok()

    shipper = LogShipper(Sink(), LogBuffer(100, lambda: 0.0))
    shipper.batch_lines = 1
    task = asyncio.create_task(shipper.run())
    await asyncio.sleep(0.05)
    shipper.emit(LogLine(app="a", ts=0.0, source="app", process="web.1", line="x"))
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done and task.cancelled()
