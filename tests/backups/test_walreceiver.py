"""backupd's own WAL receiver (roost.backups.walreceiver): pg_receivewal's
command line as `barman receive-wal` builds it, the repair of an odd
`.partial` segment, and Barman's receive-wal lock held by the receiver, as
Barman's own process manager reads it. Streaming itself is proven by the
Barman tests against a real PostgreSQL (test_barman, test_wal_gap, test_pitr)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from roost.backups import walreceiver as wr
from roost.backups.barman import ServerConfig
from roost.backups.barmanconf import render_config
from roost.wire.messages import PgSource

SRC = PgSource(host="10.0.0.7", port=5433, user="roost backup", password="p%w:d")
SEG = 16 * 1024 * 1024


def test_the_command_line_is_barmans() -> None:
    argv = wr.receive_argv(SRC, Path("/d/pgpass"), Path("/d/s1/streaming"), "roost_s1")
    assert argv[0].endswith("/pg_receivewal")
    assert argv[1:] == [
        "--dbname=host=10.0.0.7 port=5433 user='roost backup' passfile=/d/pgpass "
        "application_name=barman_receive_wal options=-csearch_path=",
        "--verbose",
        "--no-loop",
        "--no-password",
        "--directory=/d/s1/streaming",
        "--slot=roost_s1",
    ]
    assert "p%w:d" not in " ".join(argv)  # the password stays in the passfile
    # The same conninfo barman.conf gives Barman for the server.
    conf = render_config(home=Path("/d"), log_file=Path("/d/l"), user="u",
                         passfile=Path("/d/pgpass"), servers=[ServerConfig("s1", SRC)])  # fmt: skip
    assert "streaming_conninfo = host=10.0.0.7 port=5433 user='roost backup' " in conf


def test_only_the_newest_partial_of_an_odd_size_is_emptied(tmp_path: Path) -> None:
    a, b = "000000010000000000000003.partial", "000000010000000000000004.partial"
    assert wr.odd_partial([], {}, SEG) is None
    assert wr.odd_partial([a, b, "x.partial"], {a: 5, b: 0}, SEG) is None
    assert wr.odd_partial([a, b], {a: 0, b: SEG}, SEG) is None
    assert wr.odd_partial([b, a], {a: 0, b: 123}, SEG) == b
    (tmp_path / a).write_bytes(b"x" * 10)
    (tmp_path / b).write_bytes(b"y" * 10)
    (tmp_path / "000000010000000000000002").write_bytes(b"z" * 10)
    assert wr.repair_partial(tmp_path, SEG) == b
    assert (tmp_path / b).stat().st_size == 0 and (tmp_path / a).stat().st_size == 10
    assert wr.repair_partial(tmp_path, SEG) is None


def test_the_lock_is_the_receivers_as_barman_reads_it(tmp_path: Path) -> None:
    fd = wr.take_lock(tmp_path, "s1")
    holder = subprocess.Popen(["sleep", "30"], pass_fds=[fd])
    try:
        wr.write_owner(fd, holder.pid)
        os.close(fd)  # only the receiver holds it now
        with pytest.raises(wr.ReceiverBusy, match="another receive-wal streams s1"):
            wr.take_lock(tmp_path, "s1")
        assert wr.lock_path(tmp_path, "s1").read_text() == f"{holder.pid}\n"
        assert _barman_sees(tmp_path, "s1") == [holder.pid]
    finally:
        holder.kill()
        holder.wait()
    # Gone with the receiver: the next one takes it, Barman sees none running.
    assert _barman_sees(tmp_path, "s1") == []
    os.close(wr.take_lock(tmp_path, "s1"))


def _barman_sees(home: Path, server: str) -> list[int]:
    """The receive-wal pids Barman's own process manager finds (its check)."""
    code = (
        "import sys; from types import SimpleNamespace as N; "
        "from barman.process import ProcessManager; "
        "pm = ProcessManager(N(barman_lock_directory=sys.argv[1], name=sys.argv[2])); "
        "print(' '.join(str(p.pid) for p in pm.list('receive-wal')))"
    )
    barman_python = "/usr/bin/python3"  # Barman is the OS package's, not in the venv
    out = subprocess.run([barman_python, "-c", code, str(home), server],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return [int(p) for p in out.stdout.split()]
