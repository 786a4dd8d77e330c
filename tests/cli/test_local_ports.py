"""The ports `roost up` gives its daemons: free, and below the kernel's
ephemeral range, so no outgoing connection takes one before its daemon binds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from roost.cli.local import ephemeral_low, free_port, hold, port_free, release


def test_the_ephemeral_range_is_read_and_defaults_when_unknown(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("40000\t60999\n")
    assert ephemeral_low(tmp_path / "range") == 40000
    (tmp_path / "bad").write_text("\n")
    assert ephemeral_low(tmp_path / "bad") == ephemeral_low(tmp_path / "missing") == 32768


def test_a_daemons_port_is_free_and_no_connection_can_be_given_it() -> None:
    low = ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed
    # What a client's connection is given as its own port, for contrast.
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        assert client.getsockname()[1] >= low


def test_a_port_held_until_its_daemon_starts_looks_taken_to_anyone_else() -> None:
    # Between `roost up`'s choice and its daemon's start, another platform's
    # look (a bind with SO_REUSEADDR) finds it taken, and so does a bind.
    port = free_port(held=True)
    try:
        assert not port_free("127.0.0.1", port)
        with pytest.raises(OSError), socket.create_server(("127.0.0.1", port)):
            pass
        assert hold("127.0.0.1", port)  # held already: still
    finally:
        release([port])
    # Let go just before its daemon starts: the daemon's bind, as ZeroMQ's.
    assert port_free("127.0.0.1", port)
    with socket.create_server(("127.0.0.1", port), reuse_port=False):
        pass
    release([port])  # twice: nothing held
    # A port something listens on cannot be held (best effort: not held).
    with socket.create_server(("127.0.0.1", free_port())) as taken:
        assert not hold("127.0.0.1", taken.getsockname()[1])


def test_ports_handed_out_by_one_process_are_never_the_same_twice() -> None:
    # A platform asks for its ports before any daemon binds one: each must
    # differ from those already given, though they all look free.
    ports = [free_port() for _ in range(1500)]
    assert len(set(ports)) == len(ports)


def test_a_daemons_port_is_never_one_a_runner_gives_its_instances(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A daemon's port inside the instance ports could be found free by a
    # runner before the daemon bound it (an instance's health check then
    # passed on the daemon), or be taken by an instance while it restarted.
    monkeypatch.setenv("ROOST_INSTANCE_PORTS", "12000-12999")
    ports = [free_port() for _ in range(500)]
    assert not [p for p in ports if 20000 <= p <= 29999 or 12000 <= p <= 12999]


def test_each_test_worker_has_its_own_instance_ports() -> None:
    from tests.conftest import instance_ports_of_worker

    slices = [
        instance_ports_of_worker(
            {"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": "4"}
        )
        for i in range(4)
    ]
    assert slices == ["20000-22499", "22500-24999", "25000-27499", "27500-29999"]
    assert instance_ports_of_worker({}) == "20000-29999"
