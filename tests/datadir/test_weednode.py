"""A role's SeaweedFS processes (roost.datadir.weednode), with a stand-in
process: started detached, adopted by a successor (never started twice),
started again after its backoff when it dies, stopped on a full stop; a
mount that does not mount within its grace is ended."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roost.datadir import seaweed
from roost.datadir.seaweed import Endpoint
from roost.datadir.weednode import (
    MOUNT_GRACE_S,
    WeedNode,
    end_superseded,
    find,
    mount_may_start,
    supersedes,
)
from roost.datadir.weedplan import Program
from tests.datadir.seaweedkit import weed_port


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    sleep = shutil.which("sleep")
    assert sleep is not None
    # A command line no other process has: a successor finds it by that.
    return [sleep, f"{abs(hash(str(tmp_path))) % 100000 + 1000}.5"]


def test_started_adopted_restarted_and_stopped(tmp_path: Path, argv: list[str]) -> None:
    first = WeedNode([Program("volume", argv)], tmp_path, tmp_path / "mnt")
    first._dirs()
    first.tick(0.0)
    started = first.parts[0].proc
    assert isinstance(started, subprocess.Popen)
    assert os.getsid(started.pid) == started.pid  # a session of its own: outlives the daemon
    successor = WeedNode([Program("volume", argv)], tmp_path, tmp_path / "mnt")
    try:
        successor.tick(1.0)
        part = successor.parts[0]
        assert part.adopted and part.proc is not None and part.proc.pid == started.pid
        assert [p.pid for p in [find(argv)] if p is not None] == [started.pid]
        # It dies: not started again before its backoff, then started.
        started.send_signal(signal.SIGKILL)
        started.wait(10)
        successor.tick(2.0)
        assert part.proc is None and part.failures == 1
        successor.tick(2.0 + 60)
        again = part.proc
        assert isinstance(again, subprocess.Popen) and again.poll() is None
        assert again.pid != started.pid
    finally:
        successor.stop()
        first.stop()
    assert part.proc is not None and part.proc.poll() is not None
    assert find(argv) is None


def test_a_mount_that_never_mounts_is_ended_after_its_grace(
    tmp_path: Path, argv: list[str]
) -> None:
    node = WeedNode([Program("mount", argv)], tmp_path, tmp_path / "mnt")
    node._dirs()
    try:
        node.tick(0.0)
        proc = node.parts[0].proc
        assert isinstance(proc, subprocess.Popen)
        node.tick(MOUNT_GRACE_S / 2)
        assert proc.poll() is None  # still given its time
        node.tick(MOUNT_GRACE_S + 1)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        node.stop()


def test_with_two_filers_the_mount_waits_for_the_first_a_minute_at_most() -> None:
    assert mount_may_start(100.0, 100.0, True)
    assert not mount_may_start(159.9, 100.0, False)
    assert mount_may_start(160.0, 100.0, False)


def test_an_older_release_s_server_on_the_same_port_is_superseded() -> None:
    # A handed-over daemon's successor renders other flags (seaweed.py
    # changed them): the old filer holds the port, so it is ended first.
    wanted = ["/new/venv/bin/weed", "filer", "-ip=10.0.0.1", "-port=7152", "-encryptVolumeData"]
    older = ["/old/venv/bin/weed", "filer", "-ip=10.0.0.1", "-port=7152"]
    assert supersedes(wanted, older)
    assert not supersedes(wanted, wanted)  # the same: adopted instead
    assert not supersedes(wanted, [*older[:2], "-ip=10.0.0.2", "-port=7152"])  # another host
    assert not supersedes(wanted, [*older[:3], "-port=7153"])  # another port
    assert not supersedes(wanted, ["/old/weed", "volume", *older[2:]])  # another server
    assert not supersedes(wanted, ["/usr/bin/python", "filer", *older[2:]])
    assert not supersedes(["weed", "filer", "-port=7152"], ["weed", "filer", "-port=7152", "-x"])


def test_a_superseded_server_is_ended_before_its_successor_starts(tmp_path: Path) -> None:
    # Stand-ins for weed: Python run as `weed` (a link), whose script is the
    # filer directory of the part's working directory (its __main__.py). The older release's,
    # on the wanted address and port with other flags, is ended before the
    # plan's starts; one on another address is left.
    (tmp_path / "bin").mkdir()
    weed = str(tmp_path / "bin" / "weed")
    os.symlink(sys.executable, weed)
    node = WeedNode(
        [Program("filer", [weed, "filer", "-ip=127.0.0.9", "-port=7152", "-encryptVolumeData"])],
        tmp_path,
        tmp_path / "mnt",
    )
    node._dirs()
    (node.home / "filer" / "__main__.py").write_text("import time\ntime.sleep(300)\n")

    elsewhere = tmp_path / "another-cluster"
    shutil.copytree(node.home / "filer", elsewhere / "filer")

    def start(*flags: str, cwd: Path = node.home) -> subprocess.Popen[bytes]:
        return subprocess.Popen([weed, "filer", *flags], cwd=cwd)

    old = start("-ip=127.0.0.9", "-port=7152", "-v=0")
    other = start("-ip=127.0.0.10", "-port=7152")
    foreign = start("-ip=127.0.0.9", "-port=7152", cwd=elsewhere)  # not this DATA's
    try:
        node.tick(0.0)
        assert old.wait(20) is not None
        assert other.poll() is None and foreign.poll() is None
        new = node.parts[0].proc
        assert isinstance(new, subprocess.Popen) and new.poll() is None
        assert end_superseded(node.parts[0].program.argv, node.home) == []  # itself: left
    finally:
        node.stop()
        for p in (old, other, foreign):
            p.kill()
            p.wait()


def test_a_filer_s_filer_toml_is_written_at_each_start_with_the_buckets_folder(
    tmp_path: Path,
) -> None:
    """An older cluster's filer.toml (no buckets_folder, or none at all with
    an embedded store) is replaced when the role next starts its filer;
    a role that runs no filer writes none."""
    import tomllib

    from roost.datadir import weedplan
    from roost.datadir.weednode import write_store

    plan = weedplan.new_plan(["c1"], ["r1", "r2"])
    toml = weedplan.home(tmp_path) / weedplan.STORE_FILE
    toml.parent.mkdir(parents=True)
    toml.write_text("[leveldb2]\nenabled = true\n")
    write_store(weedplan.for_host(plan, "c1", ["controller"]), "controller", tmp_path)
    parsed = tomllib.loads(toml.read_text())
    assert parsed["filer"]["options"]["buckets_folder"] == weedplan.BUCKETS_FOLDER
    assert parsed["leveldb2"]["dir"] == str(weedplan.filer_dir(tmp_path) / "filerldb2")
    assert toml.stat().st_mode & 0o077 == 0
    other = tmp_path / "runner"
    write_store(weedplan.for_host(plan, "r1", ["runner"]), "runner", other)
    assert not (weedplan.home(other) / weedplan.STORE_FILE).exists()


def test_with_two_filers_the_s3_gateway_waits_for_the_first_as_the_mount(
    tmp_path: Path, argv: list[str]
) -> None:
    """Its front would give it the second filer, where it would stay."""
    import socket as _socket

    from roost.datadir.seaweed import Endpoint
    from roost.datadir.weednode import FIRST_FILER_WAIT_S

    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = Endpoint("127.0.0.1", int(s.getsockname()[1]))  # nothing listens
    node = WeedNode([Program("s3", argv)], tmp_path, tmp_path / "mnt", closed)
    node._dirs()
    node.tick(0.0)
    assert node.parts[0].proc is None
    node.tick(FIRST_FILER_WAIT_S)  # past the wait: started anyway
    try:
        assert node.parts[0].proc is not None
    finally:
        node.stop()


def test_weed_s_own_log_files_go_to_the_host_s_log_directory_not_tmp(tmp_path: Path) -> None:
    """A real `weed master`: glog writes a file per process into the
    temporary directory, which was /tmp on every host for good (dozens a
    suite run); the node gives its processes TMPDIR = its logs directory."""
    argv = seaweed.master_argv(
        seaweed.weed_binary(), Endpoint("127.0.0.1", weed_port()), tmp_path / "mdir"
    )
    node = WeedNode([Program("master", argv)], tmp_path, tmp_path / "mnt")
    node._dirs()
    node.tick(0.0)
    proc = node.parts[0].proc
    assert isinstance(proc, subprocess.Popen)
    try:
        logs = node.home / "logs"
        deadline = time.monotonic() + 30
        mine = f".{proc.pid}"
        while not [f for f in os.listdir(logs) if f.startswith("weed.") and f.endswith(mine)]:
            assert proc.poll() is None, (logs / "master.log").read_text()[-2000:]
            assert time.monotonic() < deadline, os.listdir(logs)
            time.sleep(0.1)
        in_tmp = [f for f in os.listdir("/tmp") if f.startswith("weed.") and f.endswith(mine)]
        assert in_tmp == []
    finally:
        node.stop()
    assert proc.poll() is not None
