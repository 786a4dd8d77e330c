"""Sending framed lines to one drain's receiver: the thin I/O side.

`SyslogSender` keeps one TCP (or TLS) connection open and writes frames
on it; `HttpsSender` POSTs each batch. Both wait at most `timeout` for
anything (connect, TLS handshake, a write to drain, a response) and turn
every failure into a `DrainError` whose message is what `roost drains
list` shows; the caller (logdrains.py) backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import uuid
from collections.abc import Sequence
from typing import Protocol

import httpx

from roost.controller.logdrain_frame import batch_headers
from roost.controller.logdrain_url import DrainTarget, address_refusal


class DrainError(Exception):
    """A batch did not reach the receiver; the message says why."""


class Sender(Protocol):
    async def send(self, frames: Sequence[bytes]) -> None: ...

    async def aclose(self) -> None: ...


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text names no reason
    return str(exc) or type(exc).__name__


async def public_address(host: str, port: int) -> str:
    """An address of `host` a drain may connect to (logdrain_url.address_refusal)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DrainError(f"{host}: cannot resolve: {_why(exc)}") from None
    refusal = f"{host} resolves to no address"
    for info in infos:
        ip = str(info[4][0])
        why = address_refusal(ip)
        if why is None:
            return ip
        refusal = f"{host}: {why}"
    raise DrainError(refusal)


class SyslogSender:
    def __init__(
        self,
        target: DrainTarget,
        tls: ssl.SSLContext,
        timeout: float = 5.0,
        allow_private: bool = False,
    ) -> None:
        self.target = target
        self.tls = tls
        self.timeout = timeout
        self.allow_private = allow_private
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, frames: Sequence[bytes]) -> None:
        t = self.target
        try:
            async with asyncio.timeout(self.timeout):
                if self._reader is not None and self._reader.at_eof():
                    # The receiver hung up since the last batch: writing on
                    # would only find out one batch later.
                    await self.aclose()
                if self._writer is None:
                    where = t.host if self.allow_private else await public_address(t.host, t.port)
                    self._reader, self._writer = await asyncio.open_connection(
                        where,
                        t.port,
                        ssl=self.tls if t.tls else None,
                        server_hostname=t.host if t.tls else None,
                    )
                self._writer.write(b"".join(frames))
                await self._writer.drain()
        except DrainError:
            raise
        except (OSError, TimeoutError, ssl.SSLError, EOFError) as exc:
            await self.aclose()
            raise DrainError(f"{t.host}:{t.port}: {_why(exc)}") from None

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            # A dead peer must not hold the close up either.
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(self.timeout):
                    await writer.wait_closed()


class HttpsSender:
    def __init__(
        self,
        target: DrainTarget,
        token: str,
        tls: ssl.SSLContext,
        timeout: float = 5.0,
        allow_private: bool = False,
    ) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout
        self.allow_private = allow_private
        self._client = httpx.AsyncClient(
            verify=tls, timeout=timeout, follow_redirects=False, trust_env=False
        )

    async def send(self, frames: Sequence[bytes]) -> None:
        headers = batch_headers(self.token, len(frames), uuid.uuid4().hex)
        url = httpx.URL(self.target.url)
        extensions = {}
        if not self.allow_private:
            # To the address checked, named in the Host header and TLS's SNI
            # (and its certificate checked against the name).
            try:
                async with asyncio.timeout(self.timeout):
                    ip = await public_address(self.target.host, self.target.port)
            except TimeoutError:
                raise DrainError(f"{self.target.host}: timed out resolving") from None
            headers["Host"] = url.netloc.decode("ascii").rsplit("@", 1)[-1]
            extensions["sni_hostname"] = self.target.host
            url = url.copy_with(host=ip)
        try:
            response = await self._client.post(
                url, content=b"".join(frames), headers=headers, extensions=extensions
            )
        except httpx.TimeoutException:
            raise DrainError(f"{self.target.host}: timed out") from None
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            raise DrainError(f"{self.target.host}: {_why(cause)}") from None
        if not 200 <= response.status_code < 300:
            raise DrainError(f"{self.target.host}: HTTP {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def sender_for(
    target: DrainTarget, token: str, tls: ssl.SSLContext, allow_private: bool = False
) -> Sender:
    if target.kind == "https":
        return HttpsSender(target, token, tls, allow_private=allow_private)
    return SyslogSender(target, tls, allow_private=allow_private)
