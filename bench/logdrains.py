"""What log drains cost the controller: framing, and writing lines with drains.

Prints:
  - RFC 5424 framing throughput (lines/s, one core);
  - how fast the same batches of lines are written through the async store
    (as runners' LogBatch are) with no drain, then with one drain that
    takes everything, one nobody listens at, one that accepts and never
    reads, and no drain again; each as a ratio of time to the first. A
    drain costs its framing on the loop and its sending task; a dead or
    stalled one must cost no more than one that works.

Usage: python bench/logdrains.py [--batches 200] [--lines 200]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path

from roost.controller.astore import AsyncStore
from roost.controller.logdrain_frame import frames
from roost.controller.logdrains import LogDrains
from roost.controller.store import Store
from roost.state.db import make_engine, migrate, sqlite_url
from roost.wire.messages import LogLine


def _lines(n: int, tag: str) -> list[LogLine]:
    now = time.time()
    text = "GET /products/42 200 in 12ms user=anonymous " + "x" * 80
    return [
        LogLine(app="shop", ts=now, source="app", process="web.1", line=f"{tag} {i} {text}")
        for i in range(n)
    ]


def framing(n: int) -> float:
    lines = _lines(n, "f")
    t0 = time.perf_counter()
    frames(lines, "d.0123456789abcdef0123456789abcd")
    return n / (time.perf_counter() - t0)


async def _write(astore: AsyncStore, batches: int, size: int, tag: str) -> float:
    t0 = time.perf_counter()
    for b in range(batches):
        await astore.append_logs(_lines(size, f"{tag}{b}"))
    return time.perf_counter() - t0


async def run(batches: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp) / "state.db")
        migrate(url)
        store = Store(make_engine(url))
        owner = store.create_account("o@example.com")
        shop = store.create_app("shop", owner)
        astore = AsyncStore(store)

        async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while await r.read(1 << 16):
                pass
            w.close()

        held: list[asyncio.StreamWriter] = []

        async def hold(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        taker = await asyncio.start_server(sink, "127.0.0.1", 0)
        staller = await asyncio.start_server(hold, "127.0.0.1", 0)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        ports = {
            "taker": taker.sockets[0].getsockname()[1],
            "dead": dead_port,
            "staller": staller.sockets[0].getsockname()[1],
        }
        drains = LogDrains(astore, "bench", allow_private=True)
        astore.log_tap = drains.offer
        task = asyncio.create_task(drains.run())
        n = batches * size
        print(f"writing {n} lines in {batches} batches of {size} (lines/s; ratio to no drain):")
        bare = 0.0
        for kind in ("none", "taker", "dead", "staller", "none"):
            row = None
            if kind != "none":
                row = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{ports[kind]}")
            drains.refresh_soon()
            while len(drains.counts()) != (row is not None):
                await asyncio.sleep(0.01)
            took = await _write(astore, batches, size, kind)
            bare = bare or took
            detail = ""
            if row is not None:
                await asyncio.sleep(1.0)
                k = drains.counts()[row.id]
                detail = f"  delivered {k.delivered}, dropped {k.dropped} {k.last_error}"
                store.remove_log_drain(shop.id, row.id)
            print(f"  {kind:8} {n / took:>9,.0f}  {took / bare:5.2f}{detail}")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for w in held:
            w.close()
        for server in (taker, staller):
            server.close()
        astore.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--lines", type=int, default=200)
    args = ap.parse_args()
    print(f"framing: {framing(100_000):,.0f} lines/s")
    asyncio.run(run(args.batches, args.lines))


if __name__ == "__main__":
    main()
