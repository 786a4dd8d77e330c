"""A throwaway PostgreSQL server from the OS packages, for tests that need the
state database on PostgreSQL (cluster mode)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return path


def _as_postgres() -> dict[str, object]:
    """Run as the postgres system user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid}


@contextmanager
def postgres_server(
    listen: str = "127.0.0.1", parent: Path | None = None, port: int | None = None
) -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh server; stop it and remove it afterwards.

    The directory lives directly under the system temp dir (or `parent`, a
    directory the postgres user can enter): pytest's own tmp_path sits in a
    root-only directory the postgres user cannot enter.
    """
    base = Path(tempfile.mkdtemp(prefix="roost-pg-", dir=parent))
    try:
        with _server(base, listen, port) as url:
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _server(base: Path, listen: str, port: int | None = None) -> Iterator[str]:
    data = base / "pgdata"
    data.mkdir(parents=True)
    sock = base / "sock"
    sock.mkdir()
    who = _as_postgres()
    if who:
        os.chown(base, who["user"], who["group"])  # type: ignore[arg-type]
        for p in (data, sock):
            os.chown(p, who["user"], who["group"])  # type: ignore[arg-type]
    # --no-sync: a throwaway server (it runs with fsync=off too); flushing
    # initdb's files was seconds of every start on a busy disk. An initdb
    # each, not a copy of one: initdb gives each cluster its own system
    # identifier, which backupd tells clusters apart by (a copied template
    # made every server of the process the same cluster to Barman).
    initdb = [pg_bin("initdb"), "-D", str(data), "-U", "roost", "--auth=trust", "-E", "UTF8"]
    subprocess.run(
        [*initdb, "--no-sync"],
        check=True,
        capture_output=True,
        **who,  # type: ignore[arg-type]
    )
    port = port or free_port()
    proc = subprocess.Popen(
        [
            pg_bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            listen,
            "-k",
            str(sock),
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **who,  # type: ignore[arg-type]
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(
                [pg_bin("pg_isready"), "-h", listen, "-p", str(port)], capture_output=True
            )
            if r.returncode == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError("postgres exited during start")
            time.sleep(0.1)
        subprocess.run(
            [pg_bin("createdb"), "-h", listen, "-p", str(port), "-U", "roost", "roost"], check=True
        )
        yield f"postgresql+psycopg://roost@{listen}:{port}/roost"
    finally:
        # Fast shutdown (SIGINT), not smart (SIGTERM): smart waits for every
        # client to leave, and a killed namespace host's connections (the
        # filers' store, a cluster's controllers) may never say goodbye: a
        # cluster's teardown waited the whole 20 s below on them.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
