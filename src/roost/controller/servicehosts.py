"""The controller's line to each servicehost, by host id.

Servicehosts are not replicas of one another: each holds its own apps' data,
so a request about an app's service goes to the one servicehost holding it,
on a client of its own (a client over all of them would rotate requests
between them, and the wrong one answers as if the data did not exist).
The address book names endpoints, not hosts: which host id answers on an
endpoint is learnt by asking each one for its status (the name it reports
itself by), again whenever a host id is not known yet. A servicehost
replaced for good (`retired`: its endpoints' hosts, controller/retired.py)
is neither asked nor reached: it no longer belongs, and a survey would wait
its whole timeout on it every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx

from roost.wire.cluster import Endpoint
from roost.wire.messages import ServiceHostStatus, ServiceHostStatusRequest
from roost.wire.rpc import RpcClient

SURVEY_TIMEOUT_S = 10.0  # a status reply sizes every server's files first
# What a servicehost that names no one calls itself (service.py does the same).
UNNAMED = "servicehost"


class HostDown(Exception):
    """No servicehost endpoint answers as this host id."""

    def __init__(self, host: str) -> None:
        super().__init__(f"servicehost {host} does not answer")
        self.host = host


def host_id(report: ServiceHostStatus) -> str:
    """The servicehost's id: its identity's host; its name from an older one."""
    return report.host_id or report.host or UNNAMED


def endpoint_host(address: str) -> str:
    """The host of a ZeroMQ endpoint ("tcp://10.0.0.4:7010" -> "10.0.0.4")."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def live_endpoints(endpoints: Sequence[Endpoint], retired: frozenset[str]) -> list[Endpoint]:
    """`endpoints` less those on a retired servicehost's host (pure)."""
    return [ep for ep in endpoints if endpoint_host(ep.address) not in retired]


class ServiceHosts:
    def __init__(
        self, endpoints: Sequence[Endpoint], client_for: Callable[[Endpoint], RpcClient]
    ) -> None:
        self.endpoints = list(endpoints)
        self._client_for = client_for
        self._clients: dict[str, RpcClient] = {}  # endpoint address -> its own client
        self._address: dict[str, str] = {}  # host id -> endpoint address
        self.retired: frozenset[str] = frozenset()  # endpoint hosts replaced for good

    @staticmethod
    def over(client: RpcClient) -> ServiceHosts:
        """Over a client of a single servicehost (it is that host's own)."""
        if len(client.endpoints) != 1:
            raise ValueError("a client over several servicehosts would rotate between them")
        return ServiceHosts(client.endpoints, lambda _ep: client)

    def retire(self, hosts: Iterable[str]) -> None:
        """The endpoint hosts of the retired servicehosts, now (all of them)."""
        self.retired = frozenset(hosts)
        self._address = {
            h: a for h, a in self._address.items() if endpoint_host(a) not in self.retired
        }

    def live(self) -> list[Endpoint]:
        """The address book's endpoints but those of retired servicehosts."""
        return live_endpoints(self.endpoints, self.retired)

    def _client(self, ep: Endpoint) -> RpcClient:
        client = self._clients.get(ep.address)
        if client is None:
            client = self._clients[ep.address] = self._client_for(ep)
        return client

    async def survey(self, timeout: float = SURVEY_TIMEOUT_S) -> dict[str, ServiceHostStatus]:
        """Every servicehost's status now: host id -> report (those that answered)."""

        async def ask(ep: Endpoint) -> tuple[Endpoint, ServiceHostStatus] | None:
            try:
                reply = await self._client(ep).call(
                    ServiceHostStatusRequest(), timeout=timeout, tries=1
                )
            except Exception:  # down, refusing, or garbled: it did not answer
                return None
            return (ep, reply) if isinstance(reply, ServiceHostStatus) else None

        found: dict[str, ServiceHostStatus] = {}
        for answer in await asyncio.gather(*(ask(ep) for ep in self.live())):
            if answer is not None:
                ep, report = answer
                found[host_id(report)] = report
                self._address[host_id(report)] = ep.address
        return found

    def knows(self, host: str) -> bool:
        """Has a servicehost answered as `host` (since this controller started)?"""
        return host in self._address

    def addresses(self) -> dict[str, str]:
        """Host id -> the address its endpoint is on (where its PostgreSQL and
        Patroni answer too), for those that have answered."""
        return {h: endpoint_host(a) for h, a in self._address.items()}

    async def client_of(self, host: str) -> RpcClient:
        """The client of the servicehost `host` (HostDown: none answers as it)."""
        if host not in self._address:
            await self.survey()
        address = self._address.get(host)
        ep = next((e for e in self.live() if e.address == address), None)
        if ep is None:
            raise HostDown(host)
        return self._client(ep)

    async def close(self) -> None:
        for client in {id(c): c for c in self._clients.values()}.values():
            await client.close()
        self._clients.clear()


# ------------------------------------------------------------ servicehost pairs

PATRONI_TIMEOUT_S = 3.0


async def ask_patroni(
    addresses: Sequence[str], rest_port: int, path: str, timeout: float = PATRONI_TIMEOUT_S
) -> dict[str, tuple[int, Any]]:
    """Each member's Patroni REST answer to GET `path`: address -> (HTTP
    status, JSON body or None); (0, None) when it did not answer. Patroni
    answers these reads without credentials (only changes need them)."""

    async def one(http: httpx.AsyncClient, address: str) -> tuple[int, Any]:
        host = f"[{address}]" if ":" in address else address
        try:
            r = await http.get(f"http://{host}:{rest_port}{path}")
        except httpx.HTTPError:
            return (0, None)
        try:
            body = r.json()
        except ValueError:
            body = None
        return (r.status_code, body)

    async with httpx.AsyncClient(timeout=timeout) as http:
        answers = await asyncio.gather(*(one(http, a) for a in addresses))
    return dict(zip(addresses, answers, strict=True))
