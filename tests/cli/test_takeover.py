"""The one-host take-over's decisions (roost.cli.takeover), as data: which
`roost up` is older, which role a daemon's command line runs, and which
descriptors are a port's listening sockets. The take-over itself runs in
tests/e2e/test_up_takeover.py, from the previous release under load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import roost
from roost.cli import control, takeover
from roost.cli.client import CliError
from roost.cli.takeover import OLDER_AFTER_S, kind_of, role_of, steal_fd
from roost.proc import activation, upstate
from roost.proc.upstate import UpStatus


def status(pid: int, release: str) -> UpStatus:
    return UpStatus(pid=pid, roles={}, release=release)


def test_how_a_running_roost_up_is_taken_over() -> None:
    settled = OLDER_AFTER_S + 1
    assert kind_of(status(10, ""), 10, settled, "0.3.0") == "restart"  # 0.1.0 wrote no release
    assert kind_of(None, 10, settled, "0.3.0") == "restart"  # no status, long after its start
    assert kind_of(status(11, "0.2.0"), 10, settled, "0.3.0") == "restart"  # another run's file
    # Another release that knows reload: its daemons hand over.
    assert kind_of(status(10, "0.2.0"), 10, settled, "0.3.0") == "hand-over"
    assert kind_of(status(10, "0.3.0"), 10, settled, "0.2.0") == "hand-over"
    # This release: not taken over (a reload is what it asks for).
    assert kind_of(status(10, "0.3.0"), 10, settled, "0.3.0") == ""
    # Just started: a current roost up has not written its status yet.
    assert kind_of(None, 10, OLDER_AFTER_S - 1, "0.3.0") == ""
    assert kind_of(status(10, ""), 10, OLDER_AFTER_S - 1, "0.3.0") == ""
    # Young but its own status names its release: that decides.
    assert kind_of(status(10, "0.2.0"), 10, OLDER_AFTER_S - 9, "0.3.0") == "hand-over"
    assert kind_of(status(10, "0.3.0"), 10, OLDER_AFTER_S - 9, "0.3.0") == ""
    assert kind_of(status(11, "0.2.0"), 10, OLDER_AFTER_S - 9, "0.3.0") == ""  # not its file yet


def test_role_of_a_daemon_command_line() -> None:
    base = ["/venv/bin/python", "-m", "roost", "--data", "/var/lib/roost"]
    assert role_of([*base, "router", "--port", "8080"]) == "router"
    assert role_of([*base, "runner", ""]) == "runner"  # (cmdline's trailing NUL)
    assert role_of([*base]) == ""
    assert role_of(["/usr/lib/postgresql/15/bin/postgres", "-D", "x"]) == ""


def test_listening_inodes_are_named_as_fd_links() -> None:
    text = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1
"""
    assert activation.listening_inodes(text, "127.0.0.1", 8080) == {"socket:[4242]"}
    assert activation.listening_inodes(text, "0.0.0.0", 8080) == {"socket:[4444]"}
    assert activation.listening_inodes(text, "127.0.0.1", 8081) == set()


def test_a_listening_socket_is_taken_from_another_process_and_outlives_it() -> None:
    code = (
        "import socket, sys, time\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "print(s.fileno(), s.getsockname()[1], flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        fd, port = (int(x) for x in holder.stdout.readline().split())
        table = Path("/proc/net/tcp").read_text()
        [link] = activation.listening_inodes(table, "127.0.0.1", port)
        assert os.readlink(f"/proc/{holder.pid}/fd/{fd}") == link
        taken = socket.socket(fileno=steal_fd(holder.pid, fd))
    finally:
        holder.kill()
        holder.wait()
    # The same socket: still listening once its first holder is gone.
    with taken, socket.create_connection(("127.0.0.1", port), timeout=5):
        taken.settimeout(5)
        taken.accept()[0].close()


def test_a_reload_of_an_older_roost_up_is_refused_rather_than_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.1.0's roost up dies of SIGHUP, apps and all: `roost up --reload` of
    this release says to start this release's roost up instead, and sends
    nothing. (The holder stands for it: the lock, and a status naming no
    release.)"""
    data = tmp_path / "data"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from roost.cli.local import lock_data_dir\n"
        "lock = lock_data_dir(Path(sys.argv[1]))\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        upstate.save(data, UpStatus(pid=holder.pid, roles={}))  # as 0.1.0 wrote it
        monkeypatch.setattr(takeover, "OLDER_AFTER_S", 0.0)
        with pytest.raises(CliError, match="knows no reload: start this release's roost up"):
            control.reload_up(data, timeout=5, say=lambda _: None)
        assert holder.poll() is None  # not sent SIGHUP
        assert takeover.older_up(data, holder.pid) == (holder.pid, "restart")
        # Of another release that knows reload: taken over, its daemons handing over.
        upstate.save(data, UpStatus(pid=holder.pid, roles={}, release="0.0.9"))
        assert takeover.older_up(data, holder.pid) == (holder.pid, "hand-over")
        # A status of this release's: a reload is what it asks for.
        upstate.save(data, UpStatus(pid=holder.pid, roles={}, release=roost.__version__))
        assert takeover.older_up(data, holder.pid) is None
    finally:
        holder.kill()
        holder.wait()
