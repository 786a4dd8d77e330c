"""The platform's own files are not readable by other local users.

Attacks through the real code paths: `roost up`'s preparation of a data
directory (`prepare_data_dir`, in a child process, as `roost up` runs it), and
a controller started as `roost controller` on a data directory an older
version left world-readable, with its SQLite database open in WAL mode. The
attacker is `nobody` (tests/nobody.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until
from tests.nobody import nobody_reads, readable_control

pytestmark = pytest.mark.e2e

PREPARE = (
    "import sys; from pathlib import Path; from roost.cli.local import prepare_data_dir; "
    "from roost.settings import Settings; prepare_data_dir(Path(sys.argv[1]), Settings()).close()"
)
# What an older Roost did: the same files and the state database (which `roost
# up` itself migrated then), made under the usual umask 022.
PREPARE_OLD = (
    "import os, sys; from pathlib import Path; from roost.settings import Settings; "
    "from roost.cli.local import lock_data_dir, prepare_cluster, write_api_info; "
    "from roost.state.db import migrate, sqlite_url; "
    "os.umask(0o022); d = Path(sys.argv[1]); lock = lock_data_dir(d); "
    "prepare_cluster(d, '127.0.0.1'); migrate(sqlite_url(d / 'state.db')); "
    "write_api_info(d, Settings()); lock.close()"
)
SECRETS = ("api.json", "cluster.json")
# The controller's own: the state database, and the admin token it writes.
CONTROLLER_SECRETS = ("state.db", "state.db-wal", "state.db-shm", "controller/admin.token")


@pytest.fixture
def data() -> Iterator[Path]:
    # Under /tmp, reachable by others (pytest's tmp dirs are 0700, which would
    # hide everything from nobody whatever the modes inside).
    base = Path(tempfile.mkdtemp(prefix="roost-private-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def assert_private(data: Path, files: list[str]) -> None:
    control = readable_control(data)
    keys = sorted((data / "keys").iterdir())
    assert keys, "no keys were made"
    got = nobody_reads([control, data, data / "keys", *keys, *(data / f for f in files)])
    assert got.pop(control) == "read"  # nobody does reach DATA
    readable = sorted(str(p) for p, r in got.items() if r != "PermissionError")
    assert not readable, f"nobody could read: {readable}"
    assert mode(data) == 0o711  # others may pass through (build and service users), not list
    assert mode(data / "keys") == 0o700
    bad = {str(p): oct(mode(p)) for p in [*keys, *(data / f for f in files)] if mode(p) != 0o600}
    assert not bad, f"not 0600: {bad}"


def test_roost_up_makes_its_data_directory_private(data: Path) -> None:
    env = {**os.environ}
    subprocess.run([sys.executable, "-c", PREPARE, str(data)], env=env, check=True, timeout=120)
    assert_private(data, list(SECRETS))


def test_a_daemon_tightens_an_older_data_directory_and_sqlite_follows(data: Path) -> None:
    subprocess.run([sys.executable, "-c", PREPARE_OLD, str(data)], check=True, timeout=120)
    # The older layout really was open: nobody could read the state database.
    assert mode(data / "state.db") == 0o644 and mode(data / "cluster.json") == 0o644
    assert nobody_reads([data / "state.db"])[data / "state.db"] == "read"
    port = free_port()
    log = data.parent / "controller.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "--data", str(data), "controller",
             "--api-port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "ROOST_LOG_LEVEL": "INFO"},
        )  # fmt: skip
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200

        wait_until(up, 90, "the controller's API")
        # The controller writes (its lease) with the database open in WAL mode.
        wait_until(
            lambda: (data / "state.db-wal").exists() and (data / "state.db-shm").exists(),
            30,
            "state.db-wal and state.db-shm",
        )
        assert_private(data, [*SECRETS, *CONTROLLER_SECRETS])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
