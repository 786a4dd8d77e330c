"""A controller's start waits for its state database (controller/statewait.py).

Seen in tests/cluster/test_pair_spare_reboot: after every host restarted,
a controller started while the state database's primary (Patroni holding
the leader key) was still starting exited on "connection refused" and never
came back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from roost.controller.statewait import probe, wait_for_state
from tests.conftest import free_port
from tests.pgserver import postgres_server


def test_a_controller_waits_for_a_state_database_that_comes_up_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    url = f"postgresql+psycopg://roost@127.0.0.1:{port}/roost"
    assert probe(url) is not None  # nothing listens there yet
    up = threading.Event()
    done = threading.Event()

    def server() -> None:
        time.sleep(2.0)
        with postgres_server(port=port):
            up.set()
            done.wait(60)

    t = threading.Thread(target=server)
    t.start()
    try:
        with caplog.at_level(logging.INFO, "roost.controller"):
            began = time.monotonic()
            assert asyncio.run(wait_for_state(url, asyncio.Event(), retry_s=0.2)) is True
        assert up.is_set(), "answered before the server was up"
        assert time.monotonic() - began >= 2.0
        said = [r.getMessage() for r in caplog.records]
        assert any("waiting for the state database" in m and "refused" in m for m in said), said
        assert probe(url) is None
    finally:
        done.set()
        t.join(60)


def test_a_stop_ends_the_wait() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        return await wait_for_state("postgresql+psycopg://x@h/db", stop, lambda url: "down", 0.05)

    began = time.monotonic()
    assert asyncio.run(main()) is False
    assert time.monotonic() - began < 2


def test_it_says_why_at_first_then_every_so_often(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter(["refused"] * 7 + [None])

    async def main() -> bool:
        return await wait_for_state(
            "postgresql+psycopg://x@h/db", asyncio.Event(), lambda url: next(answers), 0.01, 0.035
        )

    with caplog.at_level(logging.INFO, "roost.controller"):
        assert asyncio.run(main()) is True
    said = [r.getMessage() for r in caplog.records]
    waits = [m for m in said if m.startswith("waiting")]
    assert 2 <= len(waits) < 7, said  # not once a try
    assert said[-1] == "the state database answers: starting"


def test_sqlite_is_not_waited_for() -> None:
    def never(url: str) -> str | None:
        raise AssertionError("probed")

    assert asyncio.run(wait_for_state("sqlite:////nonexistent/x.db", asyncio.Event(), never))
