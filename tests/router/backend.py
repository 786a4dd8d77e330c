"""A scriptable HTTP/1.1 app instance for router tests (asyncio + h11).

Paths:
  /echo        JSON: method, path, headers, body size and sha256, instance name
  /id          the instance name, as text
  /stream      chunked response, `n` chunks, `delay` s apart, waits on `gate` if set
  /slow        answers after `delay` seconds
  /held        answers (as /id) once `gate` is set
  /close       closes the connection without answering
  /half        sends a response head, part of the body, then closes
  /eof         a body delimited by closing the connection
  /big         `n` bytes of body (Content-Length)
  /text        a compressible text body (for gzip)
  /ws          101 Switching Protocols, then echoes bytes upper-cased
  /upload      reads the body piece by piece, recording arrival of each piece
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h11


class AppInstance:
    def __init__(self, name: str) -> None:
        self.name = name
        self.drop = False
        self.requests: list[dict[str, object]] = []
        self.connections = 0
        self.upload_pieces: list[bytes] = []
        self.first_piece = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.stream_sent: list[int] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.unix_path = ""
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, unix_path: Path | None = None) -> AppInstance:
        if unix_path is not None:
            self.server = await asyncio.start_unix_server(self._serve, str(unix_path))
            self.unix_path = str(unix_path)
        else:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next(conn, reader)
                if event is None or isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    return
                keep = await self._handle(conn, event, reader, writer)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, h11.LocalProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    ev = conn.next_event()
                    return None if ev is h11.NEED_DATA else ev
                continue
            if event is h11.PAUSED:
                return None
            return event  # type: ignore[return-value]

    async def _body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, record: bool
    ) -> bytes:
        parts: list[bytes] = []
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
                if record:
                    self.upload_pieces.append(bytes(event.data))
                    self.first_piece.set()
            elif isinstance(event, h11.EndOfMessage) or event is None:
                return b"".join(parts)

    async def _handle(
        self,
        conn: h11.Connection,
        req: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        target = req.target.decode()
        url = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        headers = [(k.decode(), v.decode()) for k, v in req.headers]

        def send(*events: h11.Event) -> None:
            for ev in events:
                data = conn.send(ev)
                if data:
                    writer.write(data)

        if path == "/ws":
            send(
                h11.InformationalResponse(
                    status_code=101, headers=[("Upgrade", "roost-test"), ("Connection", "Upgrade")]
                )
            )
            await writer.drain()
            rest, _ = conn.trailing_data
            if rest:
                writer.write(bytes(rest).upper())
            while True:
                data = await reader.read(65536)
                if not data:
                    return False
                writer.write(data.upper())
                await writer.drain()
        body = await self._body(conn, reader, record=path == "/upload")
        self.requests.append({"method": req.method.decode(), "path": target, "headers": headers})
        if self.drop:  # a broken instance: reads the request, never answers
            await self.gate.wait()  # (closing once the test lets it, when it cleared `gate`)
            return False
        if path == "/close":
            return False
        if path == "/slow":
            await asyncio.sleep(float(q.get("delay", "1")))
        if path == "/held":
            await self.gate.wait()
            path = "/id"
        if path == "/eof":  # no Content-Length, no chunking: the body ends at close
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"the-end")
            await writer.drain()
            return False
        if path == "/half":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()
            return False
        if path == "/stream":
            n, delay = int(q.get("n", "3")), float(q.get("delay", "0.05"))
            send(h11.Response(status_code=200, headers=[("Content-Type", "text/plain")]))
            for i in range(n):
                if i == n - 1:
                    await self.gate.wait()
                send(h11.Data(data=f"chunk-{i};".encode()))
                await writer.drain()
                self.stream_sent.append(i)
                await asyncio.sleep(delay)
            send(h11.EndOfMessage())
            await writer.drain()
            return True
        if path == "/big":
            payload = b"x" * int(q.get("n", "1000000"))
            ctype = "application/octet-stream"
        elif path == "/text":
            payload = ("hello roost " * 2000).encode()
            ctype = "text/plain; charset=utf-8"
        elif path == "/id":
            payload = self.name.encode()
            ctype = "text/plain"
        else:
            info = {
                "instance": self.name,
                "method": req.method.decode(),
                "path": target,
                "headers": headers,
                "body_size": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "http_version": req.http_version.decode(),
            }
            payload = json.dumps(info).encode()
            ctype = "application/json"
        extra = [(k, v) for k, v in q.items() if k.startswith("h-")]
        resp_headers = [("Content-Type", ctype), ("Content-Length", str(len(payload)))]
        resp_headers += [(k[2:], v) for k, v in extra]
        send(h11.Response(status_code=int(q.get("status", "200")), headers=resp_headers))
        if req.method != b"HEAD":
            send(h11.Data(data=payload))
        send(h11.EndOfMessage())
        await writer.drain()
        return True
