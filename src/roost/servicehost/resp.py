"""A minimal Redis client (RESP2) for the daemon's few admin commands.

The servicehost needs AUTH, PING, SAVE, CONFIG SET and INFO; this keeps the
runtime free of a client library. Replies: simple strings and bulk strings
as `str`, integers as `int`, arrays as lists, nil as None; an error reply
raises `RedisError`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from roost import aio


class RedisError(Exception):
    pass


def encode_command(*args: str | int | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> Any:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = await reader.readexactly(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [await read_reply(reader) for _ in range(n)]
    raise RedisError(f"unexpected reply {line[:40]!r}")


class RedisAdmin:
    """One connection, authenticated as `username`; use `async with`."""

    def __init__(self, host: str, port: int, username: str, password: str, timeout: float) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RedisAdmin:
        self._reader, self._writer = await aio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        try:
            await self.call("AUTH", self.username, self.password)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self._writer = None

    async def call(self, *args: str | int | bytes, timeout: float | None = None) -> Any:
        assert self._reader is not None and self._writer is not None, "not connected"
        self._writer.write(encode_command(*args))
        await self._writer.drain()
        return await aio.wait_for(read_reply(self._reader), timeout or self.timeout)


def parse_info(text: str) -> dict[str, str]:
    """INFO's `key:value` lines as a dict (section headers skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out
