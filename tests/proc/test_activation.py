"""Socket activation (systemd's protocol): reading what a process is handed,
refusing what is not a listening TCP socket, and handing sockets to a child."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from roost.proc import activation
from roost.proc.exits import ConfigError


def test_parse_reads_the_sockets_meant_for_this_process() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "http:https"}
    assert activation.parse(env, 42) == [("http", 3), ("https", 4)]
    assert activation.parse(env, 43) == []  # inherited by another process: not ours
    assert activation.parse({"LISTEN_FDS": "1", "LISTEN_PID": "42"}, 42) == [("unknown", 3)]
    assert activation.parse({}, 42) == []


@pytest.mark.parametrize(
    "env",
    [
        {"LISTEN_FDS": "two", "LISTEN_PID": "42"},
        {"LISTEN_FDS": "-1", "LISTEN_PID": "42"},
        {"LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "http"},
    ],
)
def test_parse_refuses_a_malformed_environment(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="LISTEN_FD"):
        activation.parse(env, 42)


def test_take_unsets_the_variables_even_when_they_are_for_another_process() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "http", "OTHER": "x"}
    assert activation.take(env) == []
    assert env == {"OTHER": "x"}


def test_only_a_listening_tcp_socket_is_taken(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        sock = activation.listening_tcp(listening.fileno(), "http")
        assert sock.getsockname() == listening.getsockname()
        sock.detach()
    not_socket = r"fd \d+ \('http'\) is not a socket"
    with (tmp_path / "f").open("w") as f, pytest.raises(ConfigError, match=not_socket):
        activation.listening_tcp(f.fileno(), "http")
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match="does not listen"):
            activation.listening_tcp(bound.fileno(), "http")
        assert bound.fileno() >= 0  # (a refused descriptor is left to its owner)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, pytest.raises(ConfigError, match="is not a TCP socket"):
        activation.listening_tcp(udp.fileno(), "https")


def test_launcher_hands_sockets_to_a_child_at_fd_3_with_its_own_pid() -> None:
    with socket.create_server(("127.0.0.1", 0)) as a, socket.create_server(("127.0.0.1", 0)) as b:
        report = (
            "import os, socket\n"
            "got = activation.take()\n"
            "print([(n, socket.socket(fileno=fd).getsockname()[1]) for n, fd in got])\n"
            "print(sorted(k for k in os.environ if k.startswith('LISTEN_')))\n"
        )
        code = "from roost.proc import activation\n" + report
        # (the second one first: moving them onto 3, 4 must not clobber either)
        argv = activation.launcher(
            [("https", b.fileno()), ("http", a.fileno())], [sys.executable, "-c", code]
        )
        out = subprocess.run(
            argv, pass_fds=(a.fileno(), b.fileno()), capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        ports = [("https", b.getsockname()[1]), ("http", a.getsockname()[1])]
        assert out.stdout.splitlines() == [repr(ports), "[]"]


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
"""


def test_listeners_counts_one_address_and_port_listening() -> None:
    assert activation.proc_address("127.0.0.1") == "0100007F"
    assert activation.proc_address("::1") == "00000000" * 3 + "01000000"
    # Port 8080 on 127.0.0.1: two listeners; not the wildcard's, the
    # established connection's or port 8081's.
    assert activation.listeners(PROC_NET_TCP, "127.0.0.1", 8080) == 2
    assert activation.listeners(PROC_NET_TCP, "0.0.0.0", 8080) == 1
    assert activation.listeners(PROC_NET_TCP, "127.0.0.1", 8082) == 0


def test_a_joining_socket_takes_every_new_connection_of_the_group() -> None:
    with socket.socket() as old:
        old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        old.bind(("127.0.0.1", 0))
        old.listen()
        port = old.getsockname()[1]
        with pytest.raises(OSError):  # without joining, the port is taken
            activation.listen("127.0.0.1", port).close()
        with activation.listen("127.0.0.1", port, join=True) as new:
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
            new.settimeout(5)
            for _ in clients:
                new.accept()[0].close()
            old.setblocking(False)
            with pytest.raises(BlockingIOError):  # the old socket got none
                old.accept()
            for c in clients:
                c.close()
