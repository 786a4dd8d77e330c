"""What the runner's data proxy serves, from its assignment and its `run`
sessions (runner/proxyfeed.py): the listeners file written when that changes."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from roost.appspec.model import AppSpec
from roost.runner.dataproxy import ProxyListener, ProxyServer, decode_listeners
from roost.runner.proxyfeed import ProxyFeed, wanted
from roost.wire.messages import InstanceAssignment, Msg, Ok, ProxyTarget, RunStart

PG = ProxyTarget(
    kind="postgres", name="pair-1", local_port=6432,
    servers=[("10.0.0.41", 5434, 8009), ("10.0.0.42", 5434, 8009)],
)  # fmt: skip
BLOG = ProxyTarget(kind="redis", name="blog", local_port=40001,
                   servers=[("10.0.0.41", 40001, 40001)], password="pw")  # fmt: skip


def instance(app: str, *targets: ProxyTarget) -> InstanceAssignment:
    return InstanceAssignment(
        instance_id=f"{app}-1", app=app, release=1, image_digest="d", process_type="web",
        spec=AppSpec(), data_proxy=list(targets),
    )  # fmt: skip


def test_each_listener_once_and_a_port_never_twice() -> None:
    clash = ProxyTarget(kind="redis", name="zz-other", local_port=40001)
    got = wanted([BLOG, PG, PG, clash])
    assert got == [
        ProxyListener("postgres", "pair-1", 6432,
                      (ProxyServer("10.0.0.41", 5434, 8009), ProxyServer("10.0.0.42", 5434, 8009))),
        ProxyListener("redis", "blog", 40001, (ProxyServer("10.0.0.41", 40001, 40001),), "pw"),
    ]  # fmt: skip


def test_the_file_follows_the_assignment_and_live_runs(tmp_path: Path) -> None:
    path = tmp_path / "dataproxy.json"
    live: set[str] = set()
    feed = ProxyFeed(path, lambda sid: sid in live)
    feed.assigned([instance("blog", PG, BLOG), instance("shop", PG)])
    assert [x.name for x in decode_listeners(path.read_bytes())] == ["pair-1", "blog"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a Redis check's password

    other = ProxyTarget(kind="redis", name="shop", local_port=40002)

    async def start(msg: RunStart) -> Msg:
        # Listed before the session starts.
        assert "shop" in [x.name for x in decode_listeners(path.read_bytes())]
        live.add(msg.session)
        return Ok()

    run = RunStart(session="s1", assignment=instance("shop", PG, other))
    asyncio.run(feed.guard(start)(run))
    feed.assigned([instance("blog", PG, BLOG)])
    assert {x.name for x in decode_listeners(path.read_bytes())} == {"pair-1", "blog", "shop"}
    live.clear()  # the run ended
    feed.assigned([])
    assert decode_listeners(path.read_bytes()) == []
