"""When each role of `roost up` serves: the readiness probes its supervisor waits on.

A role is up when it does what the others and the user need of it, not when
its process exists: the controller when its API answers; the builder when
its build and image endpoints accept connections; the router when it
answers an HTTP request (its port accepts connections even before it
does: `roost up` holds the listening socket, whose backlog keeps them);
the gateway when its port accepts (so a `git push` right after start is
answered), backupd when its endpoint does (its repository is made before it
listens); the runner and the servicehost once the controller has heard
from them (a runner it has no heartbeat from gets no instances; a
servicehost it has no status from, no databases). Each probe retries until
it succeeds; the supervisor bounds how long it may take.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from roost.cli import httpget
from roost.settings import Settings
from roost.wire.cluster import ClusterConfig

Probe = Callable[[Any], Awaitable[None]]
RETRY_S = 0.2


def _split(address: str) -> tuple[str, int]:
    """tcp://HOST:PORT -> (HOST, PORT), the host as something one can connect to."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    host = host.strip("[]")
    if host in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def listening(addresses: list[tuple[str, int]] | Callable[[], list[tuple[str, int]]]) -> Probe:
    """Up once every address accepts a connection (`addresses` may be a
    function: asked at each probe)."""

    async def probe(_proc: Any) -> None:
        pending = list(addresses() if callable(addresses) else addresses)
        while pending:
            if await _accepts(*pending[0]):
                pending.pop(0)
            else:
                await asyncio.sleep(RETRY_S)

    return probe


# Any HTTP answer will do: no app has this name.
_ASK = b"GET / HTTP/1.1\r\nHost: roost-readiness.invalid\r\nConnection: close\r\n\r\n"


async def _answers(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(_ASK)
                return (await reader.read(5)) == b"HTTP/"
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False


def answering(address: tuple[str, int]) -> Probe:
    """Up once an HTTP request to `address` gets an HTTP response."""

    async def probe(_proc: Any) -> None:
        while not await _answers(*address):
            await asyncio.sleep(RETRY_S)

    return probe


def local_api(data: Path) -> tuple[str, ssl.SSLContext | bool, dict[str, str]]:
    """The local controller's URL, how to trust it, and the admin's header
    (DATA/api.json: the token itself, or the file the controller keeps it in)."""
    saved = json.loads((data / "api.json").read_text())
    token = str(saved.get("token", ""))
    if not token and saved.get("token_file"):
        token = Path(saved["token_file"]).read_text().strip()
    ca = str(saved.get("ca", ""))
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    return str(saved["url"]), verify, {"Authorization": f"Bearer {token}"} if token else {}


def api_lists(data: Path, path: str, key: str, value: str) -> Probe:
    """Up once the controller's `path` (a JSON list) has an item whose `key`
    is `value` (and, when items carry a state, is "up")."""

    async def probe(_proc: Any) -> None:
        while True:
            try:
                url, verify, headers = await asyncio.to_thread(local_api, data)
                status, body = await httpget.get(f"{url}{path}", verify, headers, timeout=2.0)
                if status == 200 and any(
                    item.get(key) == value and item.get("state", "up") == "up"
                    for item in json.loads(body)
                ):
                    return
            except (OSError, ValueError, KeyError):
                pass  # not yet: the controller is (re)starting, or has not heard
            await asyncio.sleep(RETRY_S)

    return probe


def role_probes(data: Path, settings: Settings, runner_host: str) -> dict[str, Probe]:
    """The probe of every role but the controller (whose API `roost up` waits on first)."""

    def served(*roles: str) -> Callable[[], list[tuple[str, int]]]:
        # Read at each probe: `roost up` moves an address another process
        # took (roost.cli.readdress), and the old one may answer for it.
        def now() -> list[tuple[str, int]]:
            cluster = ClusterConfig.load(data / "cluster.json")
            return [_split(ep.address) for role in roles for ep in cluster.of(role)]

        return now

    host = settings.bind_host
    return {
        "builder": listening(served("builder", "images")),
        "runner": api_lists(data, "/api/hosts", "host_id", runner_host),
        "router": answering(_split(f"{host}:{settings.router_port}")),
        "gateway": listening([_split(f"{host}:{settings.ssh_port}")]),
        # (by its key's name: its id is the machine's, from this release on)
        "servicehost": api_lists(data, "/api/servicehosts", "name", "servicehost"),
        "backupd": listening(served("backupd")),
    }
