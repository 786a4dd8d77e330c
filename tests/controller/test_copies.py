"""Image copies on the controller: which images must stay (pure), who can serve
one (pure), and the answers runners get, over a real state database."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.copies import (
    COPY_BACKOFF,
    CopyAttempts,
    ReleaseImage,
    copy_sources,
    needed_images,
    note_copy,
    plan_copies,
)
from roost.controller.core import Controller
from roost.controller.image_rpc import ImageRpc
from roost.controller.store import Store
from roost.wire.messages import (
    Error,
    Heartbeat,
    ImageRetain,
    ImageRetainRequest,
    ImageSource,
    ImageSources,
    ImageSourcesRequest,
)
from tests.releases import digest as d
from tests.releases import go_live, sqlite_controller


def test_needed_images_current_pending_and_rollback() -> None:
    rels = [
        ReleaseImage(1, 1, "superseded", d("1")),
        ReleaseImage(1, 2, "superseded", d("2")),
        ReleaseImage(1, 3, "superseded", d("3")),
        ReleaseImage(1, 4, "superseded", d("4")),
        ReleaseImage(1, 5, "superseded", d("4")),  # a config change: same image
        ReleaseImage(1, 6, "failed", d("6")),
        ReleaseImage(1, 7, "active", d("7")),
        ReleaseImage(1, 8, "pending", d("8")),
        ReleaseImage(2, 1, "active", d("a")),
        ReleaseImage(3, 1, "active", d("b")),  # app 3 was deleted
    ]
    needed = needed_images(rels, {1: 7, 2: 1}, keep=4)
    # current, pending, and three distinct images that served before (four
    # with the current one); not the failed one, not the oldest, nothing of a
    # deleted app.
    assert needed == {d("7"), d("8"), d("4"), d("3"), d("2"), d("a")}
    assert needed_images(rels, {1: None}, keep=0) == {d("8")}


def test_a_static_bundle_is_kept_as_long_as_its_image() -> None:
    rels = [
        ReleaseImage(1, 1, "superseded", d("1"), static=d("e")),
        ReleaseImage(1, 2, "superseded", d("2"), static=d("f")),
        ReleaseImage(1, 3, "active", d("3"), static=d("c")),
        ReleaseImage(1, 4, "pending", d("4"), static=d("d")),
        ReleaseImage(1, 5, "failed", d("5"), static=d("5")),
    ]
    assert needed_images(rels, {1: 3}, keep=2) == {
        d("3"),
        d("c"),
        d("4"),
        d("d"),
        d("2"),
        d("f"),
    }
    assert needed_images(rels, {1: 3}, keep=1) == {d("3"), d("c"), d("4"), d("d")}


def test_plan_copies_asks_for_what_no_live_host_holds() -> None:
    needed = {d("1"), d("2"), d("3")}
    holders = {d("1"): {"h1"}, d("2"): {"gone"}, d("9"): {"gone"}}  # 3: never recorded
    asks = plan_copies(needed, holders, ["h1", "h2"], {}, 0.0, random.Random(1))
    # 1 is held by a live host; 9 is not needed; 2 and 3 get a copy on a live host.
    assert [a[0] for a in asks] == [d("2"), d("3")]
    assert all(h in ("h1", "h2") for _, h in asks)
    # Nobody alive: nothing to ask.
    assert plan_copies(needed, holders, [], {}, 0.0) == []
    # Nothing needed: nothing to ask, whatever the holders.
    assert plan_copies(set(), holders, ["h1"], {}, 0.0) == []


def test_plan_copies_backs_off_per_digest_and_passes_failed_hosts_over() -> None:
    needed, holders, alive = {d("1"), d("2")}, {d("1"): {"gone"}}, ["h1", "h2", "h3"]
    attempts = note_copy({}, d("1"), "h1", ok=False, now=100.0)
    assert attempts[d("1")] == CopyAttempts(1, 100.0 + COPY_BACKOFF.base_s, frozenset({"h1"}))
    # While 1 backs off only 2 is asked for.
    assert [a[0] for a in plan_copies(needed, holders, alive, attempts, 100.5)] == [d("2")]
    # Once due, never the host that failed, whatever the draw.
    for seed in range(20):
        asks = plan_copies(
            {d("1")}, holders, alive, attempts, 100.0 + COPY_BACKOFF.base_s, random.Random(seed)
        )
        assert asks and asks[0][1] in ("h2", "h3")
    # Failures double the wait, up to a cap; when every live host failed, all are tried again.
    attempts = note_copy(attempts, d("1"), "h2", ok=False, now=200.0)
    attempts = note_copy(attempts, d("1"), "h3", ok=False, now=300.0)
    assert attempts[d("1")].next_at == 300.0 + 4 * COPY_BACKOFF.base_s
    assert attempts[d("1")].failed_hosts == {"h1", "h2", "h3"}
    assert (
        plan_copies({d("1")}, holders, alive, attempts, 300.0 + 4 * COPY_BACKOFF.base_s - 0.1) == []
    )
    assert (
        len(plan_copies({d("1")}, holders, alive, attempts, 300.0 + 4 * COPY_BACKOFF.base_s)) == 1
    )
    for _ in range(20):
        attempts = note_copy(attempts, d("1"), "h1", ok=False, now=1000.0)
    assert attempts[d("1")].next_at == 1000.0 + COPY_BACKOFF.max_s
    # A success forgets the digest's failures.
    assert note_copy(attempts, d("1"), "h2", ok=True, now=1001.0) == {}


def test_copy_sources_are_live_serving_hosts_but_the_asker() -> None:
    def hb(host: str, ep: str) -> Heartbeat:
        return Heartbeat(host_id=host, hostname=host, rpc_endpoint=ep, rpc_key="k" if ep else "")

    alive = {"h1": hb("h1", "tcp://h1:1"), "h2": hb("h2", "tcp://h2:1"), "h3": hb("h3", "")}
    got = copy_sources(["h1", "h2", "h3", "gone"], alive, "h2", random.Random(1))
    assert got == [ImageSource(host_id="h1", endpoint="tcp://h1:1", key="k")]


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[tuple[Controller, Store]]:
    with sqlite_controller(tmp_path) as both:
        yield both


async def test_sources_and_retention_answers(ctl: tuple[Controller, Store]) -> None:
    c, store = ctl
    rpc = ImageRpc(c)
    for host in ("h1", "h2"):
        c.soft.record(
            Heartbeat(host_id=host, hostname=host, rpc_endpoint=f"tcp://{host}:9", rpc_key="k"),
            time.monotonic(),
        )
    app = store.create_app("rep", store.create_account("r@example.com"))
    spec = AppSpec(processes={"web": ProcessSpec(name="web", kind="command", command="x")})
    store.create_build("b1", app.id)
    store.create_release(app.id, "b1", d("1"), d("e"), spec, "", "v1")
    go_live(store, app.id, 1)
    for digest, host in ((d("1"), "h1"), (d("1"), "h2"), (d("1"), "h1"), (d("9"), "h1")):
        store.add_copy(digest, host)  # the repeated confirmation is idempotent

    reply = await rpc.sources(ImageSourcesRequest(digest=d("1"), host_id="h2"))
    assert isinstance(reply, ImageSources)
    assert [(s.host_id, s.endpoint) for s in reply.sources] == [("h1", "tcp://h1:9")]
    assert isinstance(await rpc.sources(ImageSourcesRequest(digest="bogus")), Error)

    # h1 still holds 1 (current release), its bundle e and 5 (no release); it dropped 9.
    reply = await rpc.retain(ImageRetainRequest(host_id="h1", held=[d("1"), d("5"), d("e")]))
    assert reply == ImageRetain(digests=[d("1"), d("e")])
    assert store.host_copies("h1") == {d("1")}  # 9 forgotten (e was never recorded)
    assert store.copy_hosts(d("1")) == ["h1", "h2"]
    assert store.copy_hosts(d("9")) == []
    assert store.all_copies() == {d("1"): {"h1", "h2"}}


def test_planning_stops_at_the_limit() -> None:
    needed = {d(str(i)) for i in range(1, 10)}
    asks = plan_copies(needed, {}, ["h1", "h2"], {}, 0.0, random.Random(1), limit=3)
    assert [digest for digest, _ in asks] == sorted(needed)[:3]
