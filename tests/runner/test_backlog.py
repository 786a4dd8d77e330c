"""The accept-queue reader (runner/backlog.py) against real listeners, and
the stop's quiesce budget as data."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from roost.runner import backlog
from roost.runner import plan as P
from roost.runner.model import Policy
from tests.runner.helpers import assignment, command_spec

POLICY = Policy(stop_grace_s=10.0)


def test_unix_listener_queue_counts_connections_not_accepted(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(16)
        clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        for c in clients:
            c.connect(path)
        assert backlog.unix_backlogs()[path] == 3
        conn, _ = listener.accept()
        assert backlog.queued([path], []) == 2
        conn.close()
        for c in clients:
            c.close()
    assert backlog.queued([path], []) == 0  # gone: counts as empty


def test_tcp_listener_queue_from_proc_net() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        assert backlog.tcp_backlog(port) == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        deadline = time.monotonic() + 5
        while backlog.tcp_backlog(port) != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backlog.queued([], [port]) == 2
        for c in clients:
            c.close()
    assert backlog.tcp_backlog(port) is None


def test_proc_net_parse_reads_listeners_only() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000\n"
        "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000040 00:00000000 00000000\n"
        "   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
    )
    assert backlog.parse_proc_net_tcp(text, 0x1F90) == 3
    assert backlog.parse_proc_net_tcp(text, 0x1F91) == 0
    assert backlog.parse_proc_net_tcp(text, 0x1F92) is None


def test_truncated_netlink_reply_is_an_error_not_a_guess() -> None:
    header = struct.pack("=IHHII", 100, backlog.SOCK_DIAG_BY_FAMILY, 0, 1, 0)
    with pytest.raises(backlog.DiagError):
        backlog.parse_unix_dump(header + bytes(24))
    error = struct.pack("=IHHII", 20, backlog.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -13)
    with pytest.raises(backlog.DiagError):
        backlog.parse_unix_dump(error)


def _up(web: bool, *, env: dict[str, str] | None = None) -> P.Record:
    rec = P.admit([assignment("i1", spec=command_spec("true", web=web), env=env)], {})[0]
    rec = P.started(rec, pid=10, now=0.0, wall=1e9, command="c", port=5000, unix_socket="/s")
    return P.marked_up(rec, 1.0)


def test_quiesce_only_for_a_web_instance_that_served_and_is_not_failed() -> None:
    up = _up(web=True)
    assert P.quiesce_budget(up, "", POLICY) == P.QUIESCE_MAX_S
    assert P.quiesce_budget(up, "failed its health check", POLICY) == 0.0
    assert P.quiesce_budget(_up(web=False), "", POLICY) == 0.0
    starting = P.started(up, pid=11, now=2.0, wall=1e9, command="c", port=5000, unix_socket="")
    assert starting.state == "starting" and P.quiesce_budget(starting, "", POLICY) == 0.0
    short = _up(web=True, env={"ROOST_GRACEFUL_TIMEOUT": "3"})
    assert P.quiesce_budget(short, "", POLICY) == 3.0


def test_kill_comes_after_the_quiesce_and_the_grace() -> None:
    up = _up(web=True)
    rec = P.stopping(up, 100.0, POLICY, quiesce_s=4.0)
    assert rec.kill_at == 100.0 + 4.0 + P.stop_grace(up.assignment, POLICY)
