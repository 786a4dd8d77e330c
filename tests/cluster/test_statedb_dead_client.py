"""A controller's host dies in the middle of a state-database transaction.

The client is a process in a network-namespace host holding a row lock (an
open transaction that updated the row, as a controller's lease renewal or a
deploy's write does for a moment); the host is cut off, then its processes
killed: its FIN never reaches the server. Another client's UPDATE of the
same row must go through once the server has dropped the dead one (its
keepalives, set per session by roost.state.db), not wait on the lock for
the server's default two hours: the next controller could not take the
scheduler lease (tests/cluster/test_chaos failed so, once in a full run).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import sqlalchemy

from roost.state.db import make_engine
from tests.cluster.cluster import _trust_subnet
from tests.cluster.harness import Network
from tests.conftest import wait_until
from tests.pgserver import postgres_server

pytestmark = pytest.mark.cluster

HOLDER = """
import sys, time
from sqlalchemy import text
from roost.state.db import make_engine
engine = make_engine(sys.argv[1])
conn = engine.connect()
conn.execute(text("UPDATE held SET v = v + 1 WHERE id = 1"))
print("locked", flush=True)
time.sleep(600)
"""

# Keepalives every 2 s after 5 s idle, 3 unanswered: ~11 s; room for a loaded machine.
DROPPED_WITHIN_S = 40


def test_a_dead_clients_row_lock_is_released(network: Network, tmp_path: Path) -> None:
    with postgres_server(listen=f"127.0.0.1,{network.gateway}") as local:
        root_url = local.replace(f"127.0.0.1,{network.gateway}", "127.0.0.1")
        _trust_subnet(root_url, f"{network.subnet}.0/24")
        engine = sqlalchemy.create_engine(root_url)
        with engine.begin() as c:
            c.execute(sqlalchemy.text("CREATE TABLE held (id int PRIMARY KEY, v int)"))
            c.execute(sqlalchemy.text("INSERT INTO held VALUES (1, 0)"))
        engine.dispose()
        host = network.add_host("ctl")
        url = local.replace(f"127.0.0.1,{network.gateway}", network.gateway)
        log = tmp_path / "holder.log"
        repo = str(Path(__file__).resolve().parents[2] / "src")
        network.spawn(host, [sys.executable, "-c", HOLDER, url], {"PYTHONPATH": repo}, log)
        wait_until(lambda: "locked" in log.read_text(), 30, f"the holder's lock ({log})")
        network.partition(host)
        network.kill_host(host)
        cut = time.monotonic()
        # What the next controller does: UPDATE the row, through its own engine.
        other = make_engine(root_url)
        try:
            with other.begin() as c:
                c.execute(sqlalchemy.text(f"SET LOCAL statement_timeout = '{DROPPED_WITHIN_S}s'"))
                c.execute(sqlalchemy.text("UPDATE held SET v = v + 10 WHERE id = 1"))
            waited = time.monotonic() - cut
            with other.connect() as c:
                v = c.execute(sqlalchemy.text("SELECT v FROM held WHERE id = 1")).scalar()
        finally:
            other.dispose()
        print(f"the dead client's lock was released after {waited:.1f}s")
        assert v == 10  # the dead client's uncommitted update rolled back
