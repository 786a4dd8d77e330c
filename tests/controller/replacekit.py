"""Two servicehost pairs and their hosts' reports, for the replace and spare tests."""

from __future__ import annotations

from roost.controller.store_pairs import PairRow
from roost.wire.messages import ServerStatus, ServiceHostStatus

P1 = PairRow("p1", ("sh1", "sh2"), ("10.0.0.1", "10.0.0.2"), 5434, 8009, 6001)


P2 = PairRow("p2", ("sh3", "sh4"), ("10.0.0.3", "10.0.0.4"), 5434, 8009, 6002)


ADDRESSES = {f"sh{i}": f"10.0.0.{i}" for i in range(1, 6)}


def reports(
    *hosts: str, serving: dict[str, list[str]] | None = None
) -> dict[str, ServiceHostStatus]:
    serving = serving or {}
    return {
        h: ServiceHostStatus(
            host_id=h,
            servers=[ServerStatus(app=a, kind="redis", state="up") for a in serving.get(h, [])],
        )
        for h in hosts
    }
