"""Redis failover benchmark (issue 16): write unavailability when the host
of an app's Redis master dies.

With the namespace hosts of tests/cluster (root required): an app's Redis
as a master and its replica on two hosts, three sentinels (both hosts and a
third), configured by the servicehost's own renderers; the app writes
through the runner-local data proxy (HAProxy, runner/dataproxy.py), SET
then WAIT 1, back to back. The master's host is killed (every process in
it, at once):

  redis_unavailable_s   the kill -> the next write accepted through the
                        same address (median over runs; target <= 10 s)
  redis_lost_acked      writes the replica had acknowledged (WAIT 1) that
                        the new master lacks (sum over runs; 0 is right)

Its parts are functions (`redis_failover`) so bench/stateful_failover.py
can print the Redis line beside PostgreSQL's. `--quick`: one run (else 3).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster.harness import Network, skip_reason  # noqa: E402
from tests.cluster.redispair import (  # noqa: E402
    Failover,
    RedisPair,
    kill_master_under_writes,
    proxy_listener,
)

from roost.runner.dataproxy import DataProxy  # noqa: E402
from roost.servicehost.host import free_port  # noqa: E402


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


async def _one(base: Path) -> Failover:
    net = Network(base)
    try:
        net.create()
        pair = RedisPair(net, net.add_host("sh1"), net.add_host("sh2"), net.add_host("ctl"))
        await pair.start()
        proxy = DataProxy(base / "proxy")
        try:
            port = free_port()
            await proxy.apply([proxy_listener(pair, port)])
            return await kill_master_under_writes(pair, ("127.0.0.1", port))
        finally:
            await proxy.close()
    finally:
        net.close()


def redis_failover(runs: int) -> tuple[float, int]:
    """(median redis_unavailable_s, acknowledged writes lost in all runs)."""
    times: list[float] = []
    lost = 0
    for i in range(runs):
        base = Path(tempfile.mkdtemp(prefix="roost-bench-redis-"))
        try:
            result = asyncio.run(_one(base))
        finally:
            shutil.rmtree(base, ignore_errors=True)
        say(
            f"run {i + 1}: writes resumed after {result.unavailable_s:.2f} s; "
            f"{len(result.acked)} acknowledged, {len(result.lost)} of them lost"
        )
        times.append(result.unavailable_s)
        lost += len(result.lost)
    return statistics.median(times), lost


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run instead of three")
    args = ap.parse_args()
    reason = skip_reason()
    if reason:
        say(f"cannot run: {reason}")
        raise SystemExit(2)
    unavailable, lost = redis_failover(1 if args.quick else 3)
    print(f"redis_unavailable_s: {unavailable:.2f}")
    print(f"redis_lost_acked: {lost}")


if __name__ == "__main__":
    main()
