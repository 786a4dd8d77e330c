"""roost.patroni.order_members against stand-ins on loopback (tests/silenthost.py):
real sockets, a Patroni REST API that answers `GET /primary`, and members
whose host never answers (packets dropped, as after a power cut)."""

from __future__ import annotations

import contextlib
import time

from roost import patroni
from tests.silenthost import connections, open_port, patroni_rest, ports, silent_port

LEADER, REPLICA, DEAD = "127.77.0.2", "127.77.0.3", "127.77.0.4"
TIMEOUT = 1.0


async def test_the_primary_first_a_silent_member_last_without_waiting_for_it() -> None:
    pg, rest = ports()
    with contextlib.ExitStack() as stack:
        listeners = [stack.enter_context(open_port(m, pg)) for m in (LEADER, REPLICA)]
        stack.enter_context(silent_port(DEAD, pg))
        stack.enter_context(silent_port(DEAD, rest))
        async with patroni_rest(LEADER, rest, 200) as asked, patroni_rest(REPLICA, rest, 503):
            started = time.monotonic()
            got = await patroni.order_members([DEAD, REPLICA, LEADER], pg, rest, TIMEOUT)
            took = time.monotonic() - started
        # Patroni answered for both: PostgreSQL was not disturbed (no backend forked).
        assert [connections(s) for s in listeners] == [0, 0]
    assert got == [LEADER, REPLICA, DEAD]
    assert asked == ["GET /primary HTTP/1.0"]
    # The leader's answer ends the probe: the silent member is not waited for.
    assert took < TIMEOUT * patroni.REST_HEAD_START, took


async def test_with_no_primary_heard_those_that_answer_come_first() -> None:
    pg, rest = ports()
    with silent_port(DEAD, pg), silent_port(DEAD, rest), open_port(REPLICA, pg):
        async with patroni_rest(REPLICA, rest, 503):
            started = time.monotonic()
            got = await patroni.order_members([DEAD, REPLICA], pg, rest, TIMEOUT)
            took = time.monotonic() - started
    assert got == [REPLICA, DEAD]
    assert took < TIMEOUT * 2, took  # the silent member was given up at the timeout


async def test_without_patroni_s_port_postgresql_s_port_says_who_is_up() -> None:
    pg, _ = ports()
    with silent_port(DEAD, pg), open_port(REPLICA, pg):
        got = await patroni.order_members([DEAD, REPLICA], pg, 0, TIMEOUT)
    assert got == [REPLICA, DEAD]


async def test_a_refused_port_is_an_answer_and_the_order_given_is_kept() -> None:
    # Nothing listens on either: both refuse at once, both are up.
    pg, rest = ports()
    started = time.monotonic()
    assert await patroni.order_members([REPLICA, LEADER], pg, rest, TIMEOUT) == [REPLICA, LEADER]
    assert time.monotonic() - started < TIMEOUT / 2


async def test_a_member_whose_patroni_is_silent_but_postgresql_answers_is_up() -> None:
    """Patroni's port filtered (or Patroni down): past its head start,
    PostgreSQL's port says the host is up."""
    pg, rest = ports()
    with contextlib.ExitStack() as stack:
        stack.enter_context(silent_port(REPLICA, rest))
        stack.enter_context(open_port(REPLICA, pg))
        stack.enter_context(silent_port(DEAD, pg))
        stack.enter_context(silent_port(DEAD, rest))
        started = time.monotonic()
        got = await patroni.order_members([DEAD, REPLICA], pg, rest, TIMEOUT)
        took = time.monotonic() - started
    assert got == [REPLICA, DEAD]
    assert took < TIMEOUT + 0.5, took


async def test_one_member_is_not_probed() -> None:
    pg, rest = ports()
    with silent_port(DEAD, pg), silent_port(DEAD, rest):
        started = time.monotonic()
        assert await patroni.order_members([DEAD], pg, rest, TIMEOUT) == [DEAD]
        assert time.monotonic() - started < 0.05
