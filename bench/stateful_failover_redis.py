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

`redis_failover` is one of bench/stateful_failover.py's parts, which prints
these beside PostgreSQL's figures; run alone, this prints only Redis's.
`--quick`: one run (else 3).
"""

from __future__ import annotations

import argparse
import asyncio
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
    failover_through_proxy,
)


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


async def _one(base: Path) -> Failover:
    net = Network(base)
    try:
        net.create()
        pair = RedisPair(net, net.add_host("sh1"), net.add_host("sh2"), net.add_host("ctl"))
        await pair.start()
        return await failover_through_proxy(pair, base / "proxy")
    finally:
        net.close()


def redis_failover(base: Path, quick: bool) -> dict[str, float]:
    """One run: a part of bench/stateful_failover.py (its PARTS)."""
    result = asyncio.run(_one(base))
    say(
        f"redis: writes resumed after {result.unavailable_s:.2f} s; "
        f"{len(result.acked)} acknowledged, {len(result.lost)} of them lost"
    )
    return {"redis_unavailable_s": result.unavailable_s, "redis_lost_acked": len(result.lost)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run instead of three")
    args = ap.parse_args()
    reason = skip_reason()
    if reason:
        raise SystemExit(f"stateful_failover_redis: {reason}")
    figures: dict[str, list[float]] = {}
    for _ in range(1 if args.quick else 3):
        with tempfile.TemporaryDirectory(prefix="roost-bench-redis-") as tmp:
            for name, value in redis_failover(Path(tmp), args.quick).items():
                figures.setdefault(name, []).append(value)
    for name, values in figures.items():
        print(f"{name}: {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
