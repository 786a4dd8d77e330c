"""Keys made when missing are made once, also by processes starting together.

Two controllers sharing a fresh DATA start at once (tests/cluster/
test_cron_failover's do): each found no API certificate (or no secrets key)
and made its own, and the renames left one's key beside the other's
certificate (a controller with a mismatched pair exits) or replaced a secrets
key another process already sealed with. Processes, not threads: the lock
is between processes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roost.controller.apitls import self_signed_certificate
from roost.controller.secretbox import ensure_key_file, read_keys

ctx = multiprocessing.get_context("fork")
WRITERS = 3


def _one(make: Callable[[int], str], n: int, barrier: Any, queue: Any) -> None:
    barrier.wait()
    try:
        queue.put(make(n))
    except Exception as exc:  # reported to the test, which fails on it
        queue.put(f"error: {exc!r}")


def _together(make: Callable[[int], str], rounds: int) -> list[set[str]]:
    """What each of WRITERS processes made or found, `rounds` times over,
    the processes released at once by a barrier."""
    seen: list[set[str]] = []
    for n in range(rounds):
        barrier, queue = ctx.Barrier(WRITERS), ctx.Queue()
        procs = [ctx.Process(target=_one, args=(make, n, barrier, queue)) for _ in range(WRITERS)]
        for p in procs:
            p.start()
        got = {queue.get(timeout=60) for _ in procs}
        for p in procs:
            p.join(30)
        seen.append(got)
    return seen


def test_controllers_starting_at_once_share_one_certificate(tmp_path: Path) -> None:
    def make(n: int) -> str:
        return self_signed_certificate(tmp_path / str(n) / "tls", ["10.0.0.5"]).fingerprint

    for got in _together(make, 8):
        assert len(got) == 1 and not next(iter(got)).startswith("error"), got


def test_processes_starting_at_once_share_one_secrets_key(tmp_path: Path) -> None:
    def make(n: int) -> str:
        path = tmp_path / str(n) / "fernet.key"
        made = ensure_key_file(path)
        assert read_keys(path) == made, "a key this process uses was replaced"
        return made[0].decode()

    for got in _together(make, 30):
        assert len(got) == 1 and not next(iter(got)).startswith("error"), got
