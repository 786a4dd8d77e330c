"""A build's log lines go to the controller in batches; the last batch, which
the build's result (and so the deploy) waits for, goes as the build ends.
No sockets: a list stands for the controller."""

from __future__ import annotations

import asyncio

from roost.builder.manager import pump_logs


async def test_lines_gather_into_a_batch_and_the_last_goes_as_the_build_ends() -> None:
    lines: list[str] = []
    wake, done = asyncio.Event(), asyncio.Event()
    sent: list[list[str]] = []

    async def send(batch: list[str]) -> None:
        sent.append(batch)

    # A batch would gather for an hour: only the build's end can send it.
    pump = asyncio.create_task(pump_logs(lines, wake, done, send, batch_s=3600))
    lines.append("-----> fetch (0.07 s)")
    wake.set()
    for _ in range(20):
        await asyncio.sleep(0)  # the pump took the wake-up and gathers
    assert sent == []
    lines.append("-----> image sha256:... built in 0.34 s")
    done.set()
    wake.set()
    await asyncio.wait_for(pump, 30)  # before: it gathered its full period first
    assert sent == [["-----> fetch (0.07 s)", "-----> image sha256:... built in 0.34 s"]]


async def test_a_batch_goes_after_its_gathering_period_while_the_build_runs() -> None:
    lines: list[str] = ["-----> lock (0.00 s)"]
    wake, done = asyncio.Event(), asyncio.Event()
    sent: list[list[str]] = []
    first = asyncio.Event()

    async def send(batch: list[str]) -> None:
        sent.append(batch)
        first.set()

    wake.set()
    pump = asyncio.create_task(pump_logs(lines, wake, done, send, batch_s=0.01))
    await asyncio.wait_for(first.wait(), 30)
    assert sent == [["-----> lock (0.00 s)"]] and not pump.done()  # the build runs on
    done.set()
    wake.set()
    await asyncio.wait_for(pump, 30)
    assert sent == [["-----> lock (0.00 s)"]]
