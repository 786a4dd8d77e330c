"""A controller's start waits for its state database to take writes.

A boot (or a restart of every host at once) starts every daemon together,
and a controller can come up before its state database's primary accepts
connections: Patroni holds the leader key, and answers its REST API's
/primary with 200, while its PostgreSQL is still starting; a failover under
way has no primary for seconds. A controller that met this with its first
query exited ("connection refused"), leaving its supervisor to start it
again; one that was not supervised so (a test host's boot) never came
back (tests/cluster/test_pair_spare_reboot). Now it waits, saying why
every few seconds, until a primary answers or it is asked to stop.

SQLite (one machine) is a file: there is nothing to wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from roost.controller.stateorder import state_engine

log = logging.getLogger("roost.controller")

# How often to try again, and to say that it is still waiting.
RETRY_S = 1.0
SAY_EVERY_S = 10.0


def probe(url: str, rest_port: int = 0) -> str | None:
    """None when the state database takes a query now (the URL's
    target_session_attrs=read-write makes that the primary); else why not,
    in one line. Blocking. `rest_port`: the members' Patroni REST port
    (stateorder: the primary is tried first; 0 when not known)."""
    engine = state_engine(url, rest_port)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except SQLAlchemyError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    finally:
        engine.dispose()


async def wait_for_state(
    url: str,
    stop: asyncio.Event,
    check: Callable[[str], str | None] = probe,
    retry_s: float = RETRY_S,
    say_every_s: float = SAY_EVERY_S,
) -> bool:
    """Wait until the state database at `url` answers; False when `stop` is
    set first."""
    if url.startswith("sqlite"):
        return True
    said_at: float | None = None
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        why = await asyncio.to_thread(check, url)
        if why is None:
            if said_at is not None:
                log.info("the state database answers: starting")
            return True
        now = loop.time()
        if said_at is None or now - said_at >= say_every_s:
            log.warning("waiting for the state database to take writes: %s", why)
            said_at = now
        try:
            await asyncio.wait_for(stop.wait(), retry_s)
        except TimeoutError:
            pass
    return False
