"""The plain lane (client.py `_lane`, scan.py `lane_request`) against the
general path it stands in for.

The lane forwards a plain request's head as it came, plus the router's own
headers, where `Exchange.start` rebuilds it header by header. So what it
accepts must be exactly what `start` would rebuild byte for byte; what it
declines goes the general way. Checked twice: the scanner alone against
httptools' reading of the same bytes, and a real router forwarding twin
requests (one taking the lane, one the general path because of a spacing
the lane declines) to an instance that records the bytes it gets.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from httptools import HttpRequestParser

from roost.router.scan import lane_request, plain_response, request_head
from roost.wire.messages import AppRoute, Backend

LANE = [
    b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET / HTTP/1.1\r\nHOST: a\r\nuser-AGENT: u\r\nREFERER: r\r\n\r\n",
    b"GET / HTTP/1.1\r\nHosts: x\r\nHost: a\r\nReferers: y\r\nUser-Agents: z\r\n\r\n",
    b"HEAD /x/y?q=1&r=%20 HTTP/1.1\r\nHost: a\r\nUser-Agent: wrk/4 (x; y)\r\n\r\n",
    b"GET /p HTTP/1.1\r\nUser-Agent: one\r\nhOsT: a.example:8080\r\nAccept: */*\r\n"
    b"Authorization: Basic dTpw\r\nReferer: http://r/\r\nUser-Agent: two\r\n\r\n",
]

NOT_LANE = [
    b"GET / HTTP/1.1\r\n\r\n",  # no Host: the general path answers 400
    b"GET / HTTP/1.1\r\nHosts: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two: 400 there too
    b"GET / HTTP/1.1\r\nHost:a\r\n\r\n",  # forwarded as "Host: a": rebuilt
    b"GET / HTTP/1.1\r\nHost:  a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:\ta\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",  # forwarded as "X-Empty: "
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty: \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\n",  # kept, not made
    b"GET / HTTP/1.1\r\nHost: a\r\nx-request-id: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 1.2.3.4\r\n\r\n",  # dropped there
    b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\xe9\r\n\r\n",
]


class _Seen:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def _rebuilt(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The head as `Exchange.start` writes it (before its own headers), from
    httptools' reading: request line, then `name: value` for each header."""
    seen = _Seen()
    HttpRequestParser(seen).feed_data(data)
    method = data.split(b" ", 1)[0]
    head = method + b" " + seen.url + b" HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in seen.headers)
    return head, seen.headers


@pytest.mark.parametrize("data", LANE)
def test_the_lane_forwards_what_the_general_path_rebuilds(data: bytes) -> None:
    url_end, hs, he, as_, ae, rs, re_ = lane_request(data, 100)
    assert url_end
    assert request_head(data, [], 100) == url_end  # a subset of the plain heads
    head, headers = _rebuilt(data)
    assert data[: len(data) - 2] == head
    last = {name.lower(): value for name, value in headers}
    assert data[hs:he] == last[b"host"]
    assert (data[as_:ae] if ae else None) == last.get(b"user-agent")
    assert (data[rs:re_] if re_ else None) == last.get(b"referer")


@pytest.mark.parametrize("data", NOT_LANE)
def test_anything_else_goes_the_general_way(data: bytes) -> None:
    assert lane_request(data, 100) == (0, 0, 0, 0, 0, 0, 0)


def test_too_many_headers_go_the_general_way() -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(4))
    data += b"\r\n"
    assert lane_request(data, 5)[0]
    assert lane_request(data, 4)[0] == 0


CUT = [
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        b"HTTP/1.1 404 No\r\nX: y\r\nCONNECTION:  Keep-Alive\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 404 No\r\nX: y\r\ncontent-length: 0\r\n\r\n",
    ),
]


@pytest.mark.parametrize(("data", "forwarded"), CUT)
def test_a_plain_response_is_cut_where_the_general_path_cuts(data: bytes, forwarded: bytes) -> None:
    end, code, i, j = plain_response(data)
    assert end and code
    assert (data[:i] + data[j:] if j else data) == forwarded


def test_two_connection_lines_go_the_general_way() -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n"
    assert plain_response(data + b"Content-Length: 0\r\n\r\n") == (0, 0, 0, 0)


class _Recorder:
    """An instance that records the exact request heads it gets and answers
    each with a small response (Connection: keep-alive, which the router cuts)."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _Recorder:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                answer = (
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
                    b"X-App: yes\r\n\r\n" + (b"" if head.startswith(b"HEAD") else b"ok\n")
                )
                if b" /split" in head:
                    # In two reads: the router's general path (httptools) relays it.
                    writer.write(answer[:20])
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    answer = answer[20:]
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


# Twins: the first takes the lane; the second differs only in spacing the
# general path normalises, so it is forwarded the same way, by the general path.
TWINS = [
    (
        b"GET /a?b=1 HTTP/1.1\r\nHost: lane.localhost\r\n\r\n",
        b"GET /a?b=1 HTTP/1.1\r\nHost:lane.localhost\r\n\r\n",
    ),
    (  # the response in one read (the lane's scan) and in two (httptools)
        b"GET /whole HTTP/1.1\r\nHost: lane.localhost\r\n\r\n",
        b"GET /split HTTP/1.1\r\nHost: lane.localhost\r\n\r\n",
    ),
    (
        b"HEAD / HTTP/1.1\r\nHost: lane.localhost\r\nUser-Agent: ua/1\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: lane.localhost\r\nUser-Agent:  ua/1\r\n\r\n",
    ),
    (
        b"GET /x HTTP/1.1\r\nReferer: http://r/p\r\nHost: lane.localhost:80\r\n"
        b"Accept: */*\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nReferer: http://r/p\r\nHost: lane.localhost:80\r\n"
        b"Accept:\t*/*\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n",
    ),
]

_RID = re.compile(rb"X-Request-Id: [0-9a-f]+-[0-9a-f]+\r\n")


def _masked_line(line: str) -> str:
    """An access line less what differs between two requests: time, ms, rid."""
    line = re.sub(r"\[[^]]*\]", "[T]", line)
    line = re.sub(r" ms=[0-9.]+", " ms=M", line)
    return re.sub(r" rid=\S+", " rid=R", line)


async def test_twins_are_forwarded_answered_and_logged_alike(router: Any, tmp_path: Path) -> None:
    rec = await _Recorder().start()
    route = AppRoute(
        app="lane",
        hostnames=["lane.localhost"],
        backends=[Backend(instance_id="i1", host="127.0.0.1", port=rec.port)],
    )
    try:
        async with router([route], access_log=True) as r:
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            answers = []
            for pair in TWINS:
                for data in pair:
                    writer.write(data)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not data.startswith(b"HEAD"):
                        head += await reader.readexactly(3)
                    answers.append(head)
            writer.close()
            await writer.wait_closed()
        lines = (tmp_path / "access.log").read_text().splitlines()
    finally:
        await rec.stop()
    assert len(rec.heads) == len(lines) == 2 * len(TWINS)
    for k in range(len(TWINS)):
        lane, general = rec.heads[2 * k], rec.heads[2 * k + 1]
        assert _RID.search(lane) and _RID.search(general)
        assert answers[2 * k] == answers[2 * k + 1]
        if b"/whole" in lane:  # (the requests differ in their paths only)
            lane = lane.replace(b"/whole", b"/split")
            lines[2 * k] = lines[2 * k].replace("/whole", "/split")
        assert _RID.sub(b"RID", lane) == _RID.sub(b"RID", general)
        assert _masked_line(lines[2 * k]) == _masked_line(lines[2 * k + 1])
    # What the lane forwarded, in full: the request as it came, then ours.
    assert _RID.sub(b"RID", rec.heads[0]) == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: lane.localhost\r\nX-Forwarded-For: 127.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: lane.localhost\r\nRID\r\n"
    )
    assert answers[0] == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-App: yes\r\n\r\nok\n"
    assert '"HEAD / HTTP/1.1" 200 0 "-" "ua/1" host=lane.localhost app=lane inst=i1' in lines[4]
    assert '"GET /x HTTP/1.1" 200 3 "http://r/p" "b" host=lane.localhost:80' in lines[6]


def _reference_line(
    peer: bytes, stamp: bytes, method: bytes, url: bytes, http10: bool, status: int, size: int,
    host: bytes, app: bytes, inst: bytes, tenths: int, rid: bytes,
) -> bytes:  # fmt: skip
    """The access line as one format (what accesslog.py wrote before it used
    precomputed runs), for values that need no escaping."""
    line = b'%s - - [%s] "%s %s HTTP/1.%d" %d %d "-" "-" host=%s app=%s inst=%s ms=%d.%d rid=%s\n'
    return line % (
        peer, stamp, method, url, 0 if http10 else 1, status, size, host, app, inst,
        tenths // 10, tenths % 10, rid,
    )  # fmt: skip


@pytest.mark.parametrize("http10", [False, True])
@pytest.mark.parametrize("status", [0, 99, 100, 200, 404, 599, 600, 999, 1000])
@pytest.mark.parametrize("tenths", [0, 7, 999, 1000, 123456])
async def test_the_access_line_from_runs_is_the_line(
    tmp_path: Path, http10: bool, status: int, tenths: int
) -> None:
    from roost.router.accesslog import AccessLog
    from roost.router.balance import Slot
    from roost.router.client import ClientConnection
    from roost.router.context import Context, Limits
    from roost.router.exchange import Exchange
    from roost.router.table import AppEntry

    backend = Backend(instance_id="i1", host="127.0.0.1", port=1)
    access = AccessLog(tmp_path / "a.log")
    ctx = Context(limits=Limits(), spawn=lambda coro: asyncio.ensure_future(coro))
    client = ClientConnection(ctx, b"http")
    client.peer = b"10.0.0.1"
    ex = Exchange(client, 100.0, b"/p?q=1")
    ex.method, ex.http10, ex.status, ex.bytes_out = b"GET", http10, status, 1234
    ex.host, ex.rid = b"a.localhost", b"abc-1"
    ex.entry = AppEntry(AppRoute(app="a", hostnames=["a.localhost"], backends=[backend]))
    ex.slot = Slot(backend)
    access.log(client, ex, 100.0 + tenths / 10000.0)
    # (the stamp the line was written with: close() flushes, and a flush
    # refreshes the stamp, which moves on if the second ended meanwhile)
    stamp = access.stamp
    access.close()
    assert (tmp_path / "a.log").read_bytes() == _reference_line(
        b"10.0.0.1", stamp, b"GET", b"/p?q=1", http10, status, 1234, b"a.localhost",
        b"a", b"i1", tenths, b"abc-1",
    )  # fmt: skip


def test_request_ids_count_in_hex_as_the_format_did() -> None:
    """Context.request_id counts up the text in place: the same ids as
    b"%s-%x" % (prefix, n) for n from 1, across every growth of the number."""
    from roost.router.context import Context, Limits

    async def make() -> list[bytes]:
        ctx = Context(limits=Limits(), spawn=lambda coro: asyncio.ensure_future(coro))
        return [ctx.request_id() for _ in range(70000)] + [ctx.rid_prefix]

    *ids, prefix = asyncio.run(make())
    assert ids == [b"%s-%x" % (prefix, n) for n in range(1, 70001)]


def test_the_scanners_read_alike_as_plain_python_without_cython(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """scan.py uncompiled, where Cython is not even installed (its slices then
    are Python's): the same answers as the module in use (compiled)."""
    import importlib.util
    import sys

    import roost.router.scan as in_use

    monkeypatch.setitem(sys.modules, "cython", None)  # (import cython fails)
    spec = importlib.util.spec_from_file_location(
        "_scan_plain", Path(in_use.__file__ or "").parent / "scan.py"
    )
    assert spec is not None and spec.loader is not None
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    assert not plain.cython.compiled
    for data in LANE + NOT_LANE:
        assert plain.lane_request(data, 100) == in_use.lane_request(data, 100)
        assert plain.sub(data, 3, 9) == in_use.sub(data, 3, 9) == data[3:9]
        # (scan.same: a slice compared in place, lengths differing or not)
        for i, j, other in (
            (3, 9, data[3:9]),
            (3, 9, data[3:8]),
            (3, 9, data[3:10]),
            (0, 0, b""),
            (0, 1, b"x"),
            (4, 9, data[3:8]),
        ):
            want = data[i:j] == other
            assert plain.same(data, i, j, other) is in_use.same(data, i, j, other) is want
    for data, _ in CUT:
        assert plain.plain_response(data) == in_use.plain_response(data)
        n = len(data)
        for i, j in ((0, 0), (n, n), (0, n), (3, 9), (0, 1), (n - 1, n)):
            assert plain.cut(data, i, j) == in_use.cut(data, i, j) == data[:i] + data[j:]
    # The lane's forwarded head: the request less its blank line, the
    # router's lines after it (empty pieces too), byte for byte as the join
    # it replaced made it.
    fwd = b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "
    for data in LANE:
        for f, host, rid in ((fwd, b"a.localhost", b"r1-2f"), (b"", b"", b""), (fwd, b"h", b"")):
            want = b"".join((data[:-2], f, host, b"\r\nX-Request-Id: ", rid, b"\r\n\r\n"))
            assert plain.lane_head(data, f, host, rid) == want
            assert in_use.lane_head(data, f, host, rid) == want


def test_the_request_clock_is_the_loops_clock() -> None:
    """context.monotonic (a request's start and end) reads the clock both
    loops keep time by: time.monotonic's, and uvloop's loop.time() within the
    few milliseconds it loses (whole milliseconds, rounded down, from a clock
    libuv may read coarse)."""
    import time

    import uvloop

    from roost.router.context import monotonic

    before = time.monotonic()
    now = monotonic()
    after = time.monotonic()
    assert before <= now <= after

    async def loop_time() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        a = loop.time()
        m = monotonic()
        b = loop.time()
        return a, m, b

    a, m, b = uvloop.run(loop_time())
    assert a <= m < b + 0.005


async def test_a_connection_remembers_its_host_only_while_it_and_the_table_hold(
    backends: Any, router: Any
) -> None:
    """A keep-alive connection remembers its last lane request's Host and the
    entry the table gave for it (client.py `memo_*`): used again only for the
    same Host bytes and the same table. Fails if either check is dropped: a
    route swap would still send to the old instance, another Host to the
    first one's app."""
    from tests.router.conftest import RawClient, app

    one, two, three = await backends("one"), await backends("two"), await backends("three")

    def get(host: bytes) -> bytes:
        return b"GET /id HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"

    async with router([app("hello", one), app("other", three)]) as r:
        c = await RawClient.open(r.port)

        async def ask(host: bytes) -> tuple[int, bytes]:
            await c.send(get(host))
            [(status, body)] = await c.raw_responses(1)
            return status, body

        assert await ask(b"hello.localhost") == (200, b"one")
        assert await ask(b"hello.localhost") == (200, b"one")
        r.set_routes([app("hello", two), app("other", three)])  # a swap: forget
        assert await ask(b"hello.localhost") == (200, b"two")
        assert await ask(b"other.localhost") == (200, b"three")  # another Host
        assert await ask(b"hello.localhost") == (200, b"two")
        # Same length, other bytes; a prefix; a longer Host: each its own lookup.
        assert (await ask(b"hellp.localhost"))[0] == 404
        assert await ask(b"other.localhost") == (200, b"three")
        assert (await ask(b"other.localhos"))[0] == 404
        assert (await ask(b"other.localhostx"))[0] == 404
        assert await ask(b"other.localhost") == (200, b"three")
        r.set_routes([app("hello", two)])  # other leaves the table
        assert (await ask(b"other.localhost"))[0] == 404
        await c.close()
