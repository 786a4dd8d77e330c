from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import h11
import pytest

from roost.router.context import Limits
from roost.router.worker import RouterWorker
from roost.settings import Settings
from roost.wire.messages import AppRoute, Backend
from tests.router.backend import AppInstance


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Any]]:
    started: list[AppInstance] = []

    async def start(name: str, unix_path: Path | None = None) -> AppInstance:
        b = await AppInstance(name).start(unix_path)
        started.append(b)
        return b

    yield start
    for b in started:
        await b.stop()


def backend_of(b: AppInstance, instance_id: str | None = None) -> Backend:
    if b.unix_path:
        return Backend(instance_id=instance_id or b.name, host="", port=0, unix_socket=b.unix_path)
    return Backend(instance_id=instance_id or b.name, host="127.0.0.1", port=b.port)


def app(name: str, *bs: AppInstance, **kw: Any) -> AppRoute:
    hostnames = kw.pop("hostnames", [f"{name}.localhost"])
    return AppRoute(app=name, hostnames=hostnames, backends=[backend_of(b) for b in bs], **kw)


@pytest.fixture
def router(tmp_path: Path) -> Callable[..., Any]:
    """`async with router(routes, **limits) as r:` a RouterWorker on a free port."""

    @contextlib.asynccontextmanager
    async def make(
        routes: list[AppRoute],
        *,
        tls: bool = False,
        settings: Settings | None = None,
        access_log: bool = False,
        ensure_bundle: Any = None,
        **limits: Any,
    ) -> AsyncIterator[RouterWorker]:
        s = settings or Settings()
        worker = RouterWorker(
            s,
            ensure_bundle=ensure_bundle,
            host="127.0.0.1",
            port=0,
            tls_port=0 if tls else None,
            state_dir=tmp_path / "router",
            routes=routes,
            limits=replace(Limits.from_settings(s), **limits),
            access_log=tmp_path / "access.log" if access_log else None,
            drain_s=0.5,
            drain_idle_s=0.0,  # (an idle connection a test left open ends at once)
        )
        async with worker:
            yield worker

    return make


class RawClient:
    """A client that writes exact bytes and reads responses with h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        method: str,
        target: str,
        host: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> tuple[h11.Response, bytes]:
        hs = [("Host", host), *(headers or [])]
        if body:
            hs.append(("Content-Length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hs))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        await self.send(data)
        return await self.response()

    async def response(self, timeout: float = 10.0) -> tuple[h11.Response, bytes]:
        resp: h11.Response | None = None
        body = b""
        async with asyncio.timeout(timeout):
            while True:
                ev = self.conn.next_event()
                if ev is h11.NEED_DATA:
                    self.conn.receive_data(await self.reader.read(65536))
                    continue
                if ev is h11.PAUSED:
                    raise AssertionError("h11 paused: use raw_responses() after raw sends")
                if isinstance(ev, h11.Response):
                    resp = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    assert resp is not None
                    if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                        self.conn.start_next_cycle()
                    return resp, body
                elif isinstance(ev, h11.ConnectionClosed):
                    raise ConnectionError("closed before a full response")

    async def raw_responses(self, n: int, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        """Read `n` responses to raw (e.g. pipelined) requests: [(status, body)]."""
        import httptools

        done: list[tuple[int, bytes]] = []
        body: list[bytes] = []

        class P:
            def on_body(self, b: bytes) -> None:
                body.append(b)

            def on_message_complete(self) -> None:
                done.append((parser.get_status_code(), b"".join(body)))
                body.clear()

        parser = httptools.HttpResponseParser(P())
        async with asyncio.timeout(timeout):
            while len(done) < n:
                data = await self.reader.read(65536)
                if not data:
                    break
                parser.feed_data(data)
        return done

    async def read_all(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.reader.read()

    async def closed(self, timeout: float = 10.0) -> bool:
        """True once the server closed the connection (EOF or reset)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if not await self.reader.read(65536):
                        return True
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def header(resp: h11.Response, name: str) -> str | None:
    for k, v in resp.headers:
        if k.decode().lower() == name.lower():
            return v.decode()
    return None
