"""The soft state as Prometheus text: written a slice of hosts at a time on
the event loop, it must still read as one well-formed exposition."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from roost.controller.metrics import HOSTS_PER_SLICE, soft_state_text
from roost.controller.softstate import SoftState
from roost.wire.messages import Heartbeat, InstanceStatus


def _hb(host: str, n: int, restarts: int = 0) -> Heartbeat:
    return Heartbeat(
        host_id=host,
        hostname=host,
        instances=[
            InstanceStatus(
                instance_id=f"{host}-i{k}", app=f"app{k}", release=1, process_type="web",
                state="up", restarts=restarts, memory_mb=12.5,
            )
            for k in range(n)
        ],
    )  # fmt: skip


async def test_many_slices_read_as_one_exposition_while_hosts_come_and_go() -> None:
    soft = SoftState(grace_s=5.0)
    hosts = [f"h{i:03d}" for i in range(3 * HOSTS_PER_SLICE + 1)]
    for h in hosts:
        soft.record(_hb(h, 3), 100.0)
    soft.record(_hb('odd"host\\', 1), 100.0)  # escaped, and read back as it was
    soft.mark_down(200.0)  # every host down: up is 0 until it beats again
    soft.record(_hb(hosts[0], 3, restarts=2), 200.0)

    async def beats_meanwhile() -> None:
        # The loop runs between slices: hosts beat, and new ones appear.
        for i in range(3):
            await asyncio.sleep(0)
            soft.record(_hb(f"new{i}", 2), 200.0)

    text, _ = await asyncio.gather(soft_state_text(soft, leader=True), beats_meanwhile())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["host"]: s.value for s in families["roost_host_up"].samples}
    assert len(up) == len(families["roost_host_up"].samples)  # each host once
    assert up[hosts[0]] == 1.0 and up[hosts[1]] == 0.0 and up['odd"host\\'] == 0.0
    assert set(hosts) <= set(up)  # every host there when the scrape began
    assert len(families["roost_heartbeat_age_seconds"].samples) == len(up)
    restarts = {
        (s.labels["app"], s.labels["instance"]): s.value
        for s in families["roost_instance_restarts"].samples
    }
    assert restarts[("app1", f"{hosts[0]}-i1")] == 2.0
    assert restarts[("app2", f"{hosts[-1]}-i2")] == 0.0
    assert len(restarts) == len(families["roost_instance_restarts"].samples)
    assert {s.value for s in families["roost_instance_memory_mb"].samples} == {12.5}
    assert [s.value for s in families["roost_scheduler_leader"].samples] == [1.0]
