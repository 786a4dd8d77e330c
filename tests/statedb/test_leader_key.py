"""The Patroni Roost runs never takes a leader key another member holds.

Debian bookworm's Patroni 3.0.2 did (its etcd3 client, on finding its own
lease expired, took a new one and wrote the leader key without looking whose
it was): a primary cut off for longer than the ttl came back, took the key
from the member promoted meanwhile and promoted itself on its old history,
and that member's acknowledged writes were lost when it was made a copy of
it again (tests/cluster/test_pg_pair_failover, one run in five under load).
Here the same steps, deterministic, against a real etcd, through the
Patroni that `roost.patroni.binary` runs: with 3.0.2 member a keeps the key.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from roost import patroni
from tests.conftest import free_port, wait_until

STEAL = """
import json, sys, time
from patroni.dcs.etcd3 import Etcd3

NS = "/roost-test-%d/" % time.time_ns()


def member(name):
    config = {"scope": "s", "name": name, "namespace": NS, "hosts": [sys.argv[1]],
              "ttl": 5, "retry_timeout": 3, "loop_wait": 1}
    return Etcd3(config)


a, b = member("a"), member("b")
a.get_cluster()
assert a.attempt_to_acquire_leader(), "a could not take the free key"
seen = a.get_cluster()
assert seen.leader.name == "a", seen.leader
time.sleep(8)  # a's lease runs out: its host cut off, or its Patroni stalled
b.get_cluster()
assert b.attempt_to_acquire_leader(), "b could not take the key a's lease left"
try:
    kept = a.update_leader(seen.leader, None)  # a's next loop, as it saw the key
except TypeError:
    kept = a.update_leader(None)  # Patroni 3.0.2's signature
print(json.dumps({"a_kept": bool(kept), "owner": b.get_cluster().leader.name}))
"""


def test_a_member_whose_lease_ran_out_does_not_take_the_key_back(tmp_path: Path) -> None:
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(
        [
            patroni.binary("etcd"), "--name", "t", "--data-dir", str(tmp_path / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{peer}", "--log-level", "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        python = Path(patroni.binary("patroni")).parent / "python"

        def healthy() -> bool:
            r = subprocess.run(
                ["etcdctl", f"--endpoints=127.0.0.1:{client}", "endpoint", "health"],
                capture_output=True,
            )
            return r.returncode == 0

        wait_until(healthy, 30, "etcd")
        r = subprocess.run(
            [str(python), "-c", STEAL, f"127.0.0.1:{client}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        said = json.loads(r.stdout.strip().splitlines()[-1])
        assert said == {"a_kept": False, "owner": "b"}, said
    finally:
        etcd.terminate()
        etcd.wait(10)


def test_an_older_patroni_is_refused_with_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "patroni"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "patroni").write_text("#!/bin/sh\n")
    (home / "bin" / "patroni").chmod(0o755)
    version = home / "lib" / "python3.11" / "site-packages" / "patroni"
    version.mkdir(parents=True)
    (version / "version.py").write_text("__version__ = '3.0.2'\n")
    try:
        patroni.patroni_binary("patroni", home)
    except patroni.ConfigError as exc:
        assert "3.0.4" in str(exc) and "scripts/install" in str(exc), exc
    else:
        raise AssertionError("Patroni 3.0.2 was accepted")
    (version / "version.py").write_text(f"__version__ = '{patroni.PATRONI_VERSION}'\n")
    assert patroni.patroni_binary("patroni", home) == str(home / "bin" / "patroni")
