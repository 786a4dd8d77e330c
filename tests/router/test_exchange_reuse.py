"""An exchange made after others were used and freed starts as a fresh one
(compiled, their memory is reused from relay.Relay's freelist: nothing of a
freed request may show through in the next)."""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path
from typing import Any

from roost.router.client import ClientConnection
from roost.router.context import Context, Limits
from roost.router.exchange import Exchange, new_exchange

FIELDS = re.findall(
    r"^    cdef public \w+ (\w+)$",
    (Path(__file__).parents[2] / "src/roost/router/relay.pxd").read_text(),
    re.M,
)


UNSET = "(unset)"  # (as plain Python, a slot never assigned: new_exchange's headers)


def state(ex: Exchange) -> dict[str, Any]:
    return {name: getattr(ex, name, UNSET) for name in FIELDS}


def dirty(ex: Exchange) -> None:
    for name, value in state(ex).items():
        if isinstance(value, bool):
            setattr(ex, name, not value)
        elif isinstance(value, int):
            setattr(ex, name, 12345)
        elif isinstance(value, float):
            setattr(ex, name, 99.5)
        elif isinstance(value, bytes):
            setattr(ex, name, b"stale")
        elif isinstance(value, list):
            value.append(b"stale")
    ex.headers = [b"X-Stale", b"1"]
    ex.expires = 7
    ex.early = [b"stale"]
    ex.replay_head = b"stale"
    ex.replay = [b"stale"]


def test_a_reused_exchange_starts_fresh() -> None:
    assert len(FIELDS) > 30  # (the pxd was read)

    async def main() -> None:
        ctx = Context(limits=Limits(), spawn=lambda coro: asyncio.ensure_future(coro))
        client = ClientConnection(ctx, b"http")
        first_lane = state(new_exchange(client, 1.0, b"/a"))
        first = state(Exchange(client, 1.0, b"/a"))
        assert first_lane["headers"] in (None, UNSET) and first["headers"] == []
        for _ in range(3):
            used = [new_exchange(client, 2.0, b"/x") for _ in range(100)]
            used += [Exchange(client, 2.0, b"/x") for _ in range(100)]
            for ex in used:
                dirty(ex)
            del used, ex
            gc.collect()
            assert state(new_exchange(client, 1.0, b"/a")) == first_lane
            assert state(Exchange(client, 1.0, b"/a")) == first

    asyncio.run(main())
