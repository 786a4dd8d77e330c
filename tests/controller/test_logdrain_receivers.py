"""Log drains against real receivers: a private rsyslogd (plain TCP, and TLS
through GnuTLS with a test CA) and an HTTPS endpoint started here. The
controller's side is the real one: lines written through the async store
reach the drains of their app; what was delivered, dropped and went
wrong is noted in the state database as `roost drains list` shows it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.logdrain_queue import DrainCounts, DrainQueue
from roost.controller.logdrains import LogDrains, tls_context
from roost.controller.store import Store
from roost.wire.messages import LogLine
from tests.conftest import free_port
from tests.controller.drainkit import (
    DrainCA,
    HttpsReceiver,
    Rsyslog,
    https_receiver,
    make_ca,
    rsyslogd,
    split_frames,
)


@pytest.fixture
def ca(tmp_path: Path) -> DrainCA:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def rsyslog(tmp_path: Path, ca: DrainCA) -> Iterator[Rsyslog]:
    with rsyslogd(tmp_path / "rsyslog", ca) as r:
        yield r


def _line(app: str, text: str, source: str = "app", stream: str = "stdout") -> LogLine:
    return LogLine(
        app=app, ts=time.time(), source=source, process="web.1", stream=stream, line=text
    )


async def _until(pred: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _status(astore: AsyncStore, drains: LogDrains, drain_id: int) -> DrainCounts:
    """The drain's status as the database holds it, once this replica has
    noted its counters as they stand (call it when they no longer move)."""
    deadline = time.monotonic() + 30
    while True:
        drains.refresh_soon()  # notes this replica's counters too
        await asyncio.sleep(0.1)
        s = (await astore.drain_status([drain_id]))[drain_id]
        if s == drains.counts()[drain_id]:
            return s
        assert time.monotonic() < deadline, f"drain {drain_id}'s counters never noted"


async def _with_drains(astore: AsyncStore, drains: LogDrains, body: object) -> None:
    astore.log_tap = drains.offer
    task = asyncio.create_task(drains.run())
    try:
        await body  # type: ignore[misc]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_syslog_drains_over_tcp_and_tls_reach_rsyslog(
    store: Store, rsyslog: Rsyslog, ca: DrainCA
) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    store.create_app("other", owner)
    tcp = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{rsyslog.tcp}")
    tls = store.add_log_drain(shop.id, f"syslog+tls://localhost:{rsyslog.tls}")
    astore = AsyncStore(store)

    async def body(drains: LogDrains) -> None:
        await _until(lambda: len(drains.counts()) == 2, "the drains to be read")
        await astore.append_logs(
            [
                _line("shop", "GET / 200"),
                _line("shop", "Traceback: boom", stream="stderr"),
                _line("shop", "v3 is live", source="platform"),
                _line("shop", "Collecting flask", source="build"),  # not a drain's
                _line("other", "not shop's"),
            ]
        )
        await _until(lambda: len(rsyslog.records()) >= 6, "rsyslog to receive 6 messages")
        for d in (tcp, tls):
            s = await _status(astore, drains, d.id)
            assert (s.delivered, s.dropped, s.failing) == (3, 0, False)

    drains = LogDrains(astore, "c1", tls_context(str(ca.ca)), allow_private=True)
    asyncio.run(_with_drains(astore, drains, body(drains)))
    astore.close()
    got = sorted(rsyslog.records(), key=lambda r: (r[3], r[5]))
    want = [
        ["shop", "app", "web.1", "GET / 200", "190"],
        ["shop", "app", "web.1", "Traceback: boom", "187"],
        ["shop", "roost", "web.1", "v3 is live", "190"],
    ]
    for token in (tcp.token, tls.token):
        mine = [[h, a, p, m, pri] for h, a, p, t, pri, m in got if t == token]
        assert sorted(mine) == sorted(want)
    assert len(got) == 6


def test_an_https_drain_posts_logplex_batches_and_retries_a_refused_one(
    store: Store, ca: DrainCA
) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    astore = AsyncStore(store)
    receiver = HttpsReceiver(statuses=[503])

    async def main() -> None:
        server = await https_receiver(ca, receiver)
        drain = store.add_log_drain(shop.id, f"https://localhost:{receiver.port}/logs?t=1")
        drains = LogDrains(astore, "c1", tls_context(str(ca.ca)), allow_private=True)

        async def body() -> None:
            await _until(lambda: len(drains.counts()) == 1, "the drain to be read")
            await astore.append_logs([_line("shop", f"line {i}") for i in range(3)])
            await _until(lambda: len(receiver.requests) >= 2, "the batch to be sent again")
            s = await _status(astore, drains, drain.id)
            assert (s.delivered, s.dropped, s.failing) == (3, 0, False)
            assert s.last_error.endswith("HTTP 503")  # the refused try, kept to be seen

        try:
            await _with_drains(astore, drains, body())
        finally:
            server.close()
            await server.wait_closed()
        first, second = receiver.requests[:2]
        assert first[2] == second[2]  # the refused batch, sent again whole
        target, headers, data = second
        assert target == "/logs?t=1"
        assert headers["content-type"] == "application/logplex-1"
        assert headers["logplex-msg-count"] == "3"
        assert headers["logplex-drain-token"] == drain.token
        msgs = split_frames(data)
        assert [m.rsplit(b" - ", 1)[1] for m in msgs] == [b"line 0", b"line 1", b"line 2"]
        assert all(m.startswith(b"<190>1 ") and b" shop app web.1 " in m for m in msgs)

    asyncio.run(main())
    astore.close()


def test_dead_and_untrusted_drains_drop_count_and_fail_while_a_good_one_delivers(
    store: Store, rsyslog: Rsyslog, ca: DrainCA
) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    dead = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{free_port()}")  # nobody there
    # The system's roots only: rsyslog's test certificate is not trusted.
    untrusted = store.add_log_drain(shop.id, f"syslog+tls://localhost:{rsyslog.tls}")
    good = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{rsyslog.tcp}")
    astore = AsyncStore(store)
    n, batches = 3000, 30
    drains = LogDrains(
        astore,
        "c1",
        tls_context(),
        make_queue=lambda: DrainQueue(max_lines=500),
        allow_private=True,
    )

    async def body() -> None:
        await _until(lambda: len(drains.counts()) == 3, "the drains to be read")
        for b in range(batches):
            await astore.append_logs(
                [_line("shop", f"{b}/{i} " + "x" * 200) for i in range(n // batches)]
            )
        k = drains.counts
        await _until(
            lambda: k()[good.id].delivered + k()[good.id].dropped == n,
            "the good drain to take every line",
        )
        await _until(
            lambda: all(k()[d.id].failing and k()[d.id].dropped for d in (dead, untrusted)),
            "the bad drains to fail and drop",
        )
        for d, why in ((dead, "Connection refused"), (untrusted, "CERTIFICATE_VERIFY_FAILED")):
            s = await _status(astore, drains, d.id)
            assert s.failing and why in s.last_error and s.delivered == 0, (d.url, s)
            # All but a queue and a batch in flight were dropped, and counted.
            assert s.dropped >= n - 500 - 500
        s = await _status(astore, drains, good.id)
        assert not s.failing and s.delivered + s.dropped == n and s.last_error == ""
        await _until(lambda: len(rsyslog.records()) == s.delivered, "rsyslog to hold them")

    asyncio.run(_with_drains(astore, drains, body()))
    astore.close()


def test_a_stalled_drain_times_out_and_drops_while_lines_keep_coming(store: Store) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    astore = AsyncStore(store)

    async def main() -> None:
        # A receiver that accepts and never reads: writes stall once the
        # socket buffers are full (its own kept small), and the send times out.
        held: list[asyncio.StreamWriter] = []

        async def hold(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        stall = await asyncio.start_server(hold, sock=sock)
        stalled = store.add_log_drain(
            shop.id, f"syslog://127.0.0.1:{stall.sockets[0].getsockname()[1]}"
        )
        drains = LogDrains(
            astore, "c1", make_queue=lambda: DrainQueue(max_lines=500), allow_private=True
        )
        written = 0

        async def body() -> None:
            nonlocal written
            await _until(lambda: len(drains.counts()) == 1, "the drain to be read")
            deadline = time.monotonic() + 120
            # Lines keep coming, and every write returns, until the drain has
            # timed out (its socket's buffers take a few MB first).
            while "timed out" not in drains.counts()[stalled.id].last_error:
                assert time.monotonic() < deadline, "the stalled drain never timed out"
                await astore.append_logs([_line("shop", "x" * 3000) for _ in range(100)])
                written += 100
                await asyncio.sleep(0.02)
            s = await _status(astore, drains, stalled.id)
            assert "timed out" in s.last_error and s.dropped > 0
            assert s.delivered + s.dropped <= written

        try:
            await _with_drains(astore, drains, body())
        finally:
            for w in held:
                w.close()
            stall.close()
            await stall.wait_closed()

    asyncio.run(main())
    astore.close()


def test_a_drain_removed_and_its_id_given_to_a_new_one_sends_to_the_new_one(
    store: Store, rsyslog: Rsyslog
) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    old = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{free_port()}")
    astore = AsyncStore(store)
    drains = LogDrains(astore, "c1", allow_private=True)

    async def body() -> None:
        await _until(lambda: old.id in drains.counts(), "the drain to be read")
        store.remove_log_drain(shop.id, old.id)
        new = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{rsyslog.tcp}")
        assert new.id == old.id  # SQLite reuses the highest id
        drains.refresh_soon()
        await _until(lambda: drains.rows() == [new], "the new drain to be read")
        await astore.append_logs([_line("shop", "to the new one")])
        await _until(lambda: rsyslog.records(), "the line at the new drain")
        assert [r[3] for r in rsyslog.records()] == [new.token]

    asyncio.run(_with_drains(astore, drains, body()))
    astore.close()


def test_each_replica_sends_the_lines_it_receives_and_the_counts_add_up(
    store: Store, rsyslog: Rsyslog
) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    drain = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{rsyslog.tcp}")
    # Two controllers on one state database, each with its own store face.
    other = Store(store.engine)
    faces = [AsyncStore(store), AsyncStore(other)]
    replicas = [LogDrains(face, f"c{i}", allow_private=True) for i, face in enumerate(faces)]

    async def main() -> None:
        tasks = []
        for face, drains in zip(faces, replicas, strict=True):
            face.log_tap = drains.offer
            tasks.append(asyncio.create_task(drains.run()))
        try:
            await _until(lambda: all(d.counts() for d in replicas), "both to read the drain")
            await faces[0].append_logs([_line("shop", f"first {i}") for i in range(3)])
            await faces[1].append_logs([_line("shop", f"second {i}") for i in range(2)])
            await _until(lambda: len(rsyslog.records()) >= 5, "rsyslog to get every line")
            for drains, n in zip(replicas, (3, 2), strict=True):
                await _until(lambda d=drains, n=n: d.counts()[drain.id].delivered == n, "counts")
            deadline = time.monotonic() + 30
            while True:  # until both have noted theirs: each writes its own row
                for drains in replicas:
                    drains.refresh_soon()
                await asyncio.sleep(0.1)
                s = (await faces[0].drain_status([drain.id]))[drain.id]
                if s.delivered == 5:
                    break
                assert time.monotonic() < deadline, s
            assert (s.dropped, s.failing) == (0, False)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    for face in faces:
        face.close()
    msgs = sorted(r[5] for r in rsyslog.records())
    assert msgs == sorted([f"first {i}" for i in range(3)] + [f"second {i}" for i in range(2)])


def test_without_private_addresses_allowed_no_drain_reaches_the_platforms_networks(
    store: Store, rsyslog: Rsyslog, ca: DrainCA
) -> None:
    owner = store.create_account("o@example.com")
    shop = store.create_app("shop", owner)
    # rsyslog listens on loopback, named by address and by a name.
    by_ip = store.add_log_drain(shop.id, f"syslog://127.0.0.1:{rsyslog.tcp}")
    by_name = store.add_log_drain(shop.id, f"syslog+tls://localhost:{rsyslog.tls}")
    receiver = HttpsReceiver()
    astore = AsyncStore(store)

    async def main() -> None:
        server = await https_receiver(ca, receiver)
        https = store.add_log_drain(shop.id, f"https://localhost:{receiver.port}/")
        drains = LogDrains(astore, "c1", tls_context(str(ca.ca)))  # the default: public only

        async def body() -> None:
            await _until(lambda: len(drains.counts()) == 3, "the drains to be read")
            await astore.append_logs([_line("shop", "secret")])
            k = drains.counts
            await _until(lambda: all(k()[d.id].failing for d in (by_ip, by_name, https)), "fail")
            for d in (by_ip, by_name, https):
                assert "is not a public address" in k()[d.id].last_error, k()[d.id]
                assert k()[d.id].delivered == 0

        try:
            await _with_drains(astore, drains, body())
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    astore.close()
    assert rsyslog.records() == [] and receiver.requests == []
