"""The master lets go of a silent volume server at once (roost.datadir.
weedwatch): when to cut, pure with a fake clock; and on a real loopback
cluster, a volume server frozen by SIGSTOP (its host silent: no FIN, no
RST) is dropped by the master once cut, long before gRPC keepalive's 80 s,
and comes back when it answers again."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir import weedwatch
from roost.datadir.seaweed import Endpoint
from roost.datadir.weedwatch import Silence
from tests.conftest import wait_until
from tests.datadir.seaweedkit import Cluster, seaweed_cluster

A = Endpoint("10.0.0.1", 7150)
B = Endpoint("10.0.0.2", 7150)


def test_a_server_is_cut_once_per_silence() -> None:
    s = Silence(silent_s=5.0)
    assert not s.observe(A, True, 0.0)
    assert not s.observe(A, False, 1.0)
    assert not s.observe(A, False, 4.9)  # silent 4.9 s: not yet
    assert s.observe(A, False, 5.0)
    assert not s.observe(A, False, 6.0)  # cut already
    assert not s.observe(A, True, 7.0)  # answers again
    assert not s.observe(A, False, 8.0)
    assert s.observe(A, False, 12.0)  # a new silence, 5 s after its answer


def test_a_server_never_heard_is_timed_from_its_first_probe() -> None:
    s = Silence(silent_s=5.0)
    assert not s.observe(B, False, 100.0)
    assert not s.observe(B, False, 104.0)
    assert s.observe(B, False, 105.0)
    assert not s.observe(A, True, 105.0)  # each server its own


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with seaweed_cluster(tmp_path, volumes=3) as c:
        yield c


def _endpoint(c: Cluster, name: str) -> Endpoint:
    argv = Path(f"/proc/{c.procs[name].pid}/cmdline").read_text().split("\0")
    port = int(next(a for a in argv if a.startswith("-port=")).split("=", 1)[1])
    return Endpoint("127.0.0.1", port)


async def test_a_frozen_volume_server_is_let_go_and_comes_back(cluster: Cluster) -> None:
    servers = [_endpoint(cluster, f"volume{i}") for i in range(3)]
    frozen = cluster.procs["volume2"].pid
    watcher = asyncio.create_task(weedwatch.watch(cluster.master, servers, every_s=0.5))
    try:
        os.kill(frozen, signal.SIGSTOP)
        # On loopback every server shares the address the cut names, so the
        # live ones are cut too; they connect again at once, the frozen one
        # cannot. The keepalive alone would take 80 s.
        await asyncio.to_thread(
            wait_until, lambda: cluster.data_nodes() == 2, 30, "the master to drop it"
        )
        os.kill(frozen, signal.SIGCONT)
        await asyncio.to_thread(
            wait_until, lambda: cluster.data_nodes() == 3, 30, "it to register again"
        )
    finally:
        os.kill(frozen, signal.SIGCONT)
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


def test_a_silent_master_is_cut_on_every_probe_until_it_answers() -> None:
    # Each probe while silent: weed dials its masters in their listed order,
    # the dead one first, and each new connect to it is cut too.
    s = Silence(silent_s=5.0)
    assert not s.silent(A, True, 0.0)
    assert not s.silent(A, False, 4.9)
    assert s.silent(A, False, 5.0)
    assert s.silent(A, False, 6.0)
    assert not s.silent(A, True, 7.0)  # back: left alone
    assert not s.silent(A, False, 11.9)
    assert s.silent(A, False, 12.0)
    assert not s.silent(B, False, 12.0)  # never heard: timed from its first probe
    assert s.silent(B, False, 17.0)


def test_the_cut_to_a_master_takes_every_connection_to_its_grpc_port() -> None:
    # Established streams and connects still in SYN-SENT alike; only to that
    # master's address and gRPC port (its HTTP port + 10000).
    assert weedwatch.cut_to_argv(A) == [
        "ss", "-K", "-t", "-n", "state", "connected", "dst", "10.0.0.1:17150",
    ]  # fmt: skip
