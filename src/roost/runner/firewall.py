"""The runner's firewall: its plan, from settings, the address book and what runs here.

`roost.tenant.firewall` renders one nftables table from a `Plan`; this module
says what the runner's plan holds and keeps it applied:

- the instance port range (ROOST_INSTANCE_PORTS, the range `PortAllocator`
  hands ports from), reachable only from the routers (the hosts
  DATA/keys/peers.json lists as routers; on one host the router is local)
  and the host itself;
- the platform's hosts: every host of the address book (cluster.json's
  endpoints) and of peers.json (every member: controllers, builders,
  servicehosts, gateways, routers, the other runners); this host's own
  addresses count by themselves;
- the routers' public ports (ROOST_ROUTER_PORT/ROOST_ROUTER_TLS_PORT), which
  apps may call like anyone;
- per-app allowances: each app whose instances or `run` sessions are on this
  host may reach its own services. They come from ROOST_SERVICE_ADDRESSES,
  which the controller sets from the credentials it issued, after the app's
  config vars: DATABASE_URL and REDIS_URL cannot be trusted for this, since
  a config var may point them anywhere (at the controller's port, say).

`RunnerFirewall.gate` puts the table in place before the supervisor sees an
assignment, and before a `run` session starts, so a tenant process never
starts before its allowances exist. With ROOST_FIREWALL=off, or when the
runner is not root (tenant code then runs as the runner itself, which no uid
rule could tell apart), nothing is applied and the log says so loudly. As
root with the firewall on, a missing or failing nft stops the runner at
start: it refuses to run tenant code unprotected.

One runner per network namespace: a second one there replaces the table
(and says whose it replaced); each removes the table at exit only while it
is still its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from roost import aio
from roost.appspec.service_env import SERVICE_ADDRESSES
from roost.proc.exits import ConfigError, Unavailable
from roost.settings import Settings, parse_port_range
from roost.tenant import nft as nftcmd
from roost.tenant.firewall import Allowance, FirewallError, Plan, parse_endpoints, render
from roost.tenant.hosts import Resolver, platform_hosts, resolve
from roost.tenant.identity import IdentityError, identity_for
from roost.wire.cluster import ClusterConfig
from roost.wire.messages import InstanceAssignment, Msg, RunStart

log = logging.getLogger("roost.runner")

TABLE = "roost"
RETRY_S = 5.0
# Hosts in an endpoint that mean "this host": covered by `fib daddr type local`.
_OWNER_PID = re.compile(r"\bpid (\d+)\b")

StartRun = Callable[[RunStart], Awaitable[Msg]]
Forward = Callable[[list[InstanceAssignment]], None]


class RunnerFirewallError(Unavailable):
    """The runner cannot protect tenant code and so will not run it (says how to fix)."""


# ------------------------------------------------------------ the plan (pure)


def router_hosts(members: Iterable[tuple[str, str]], own_host: str = "") -> list[str]:
    """The hosts `members` lists as routers, less this one (its router is local)."""
    return sorted({h for role, h in members if role == "router" and h != own_host})


def service_endpoints(instances: Iterable[InstanceAssignment]) -> dict[int, set[tuple[str, int]]]:
    """Tenant uid -> the (host, port) of each service the platform gave its app.

    Only ROOST_SERVICE_ADDRESSES counts (see the module docstring). An
    assignment without an app id (an older controller) or with an unreadable
    value gets nothing: its app then cannot reach its services, which is the
    safe way to be wrong.
    """
    out: dict[int, set[tuple[str, int]]] = {}
    for a in instances:
        text = a.env.get(SERVICE_ADDRESSES, "")
        if not text:
            continue
        try:
            uid = identity_for(a.app_id, a.app).uid
            endpoints = parse_endpoints(text)
        except (IdentityError, FirewallError) as exc:
            log.warning("%s: no service access through the firewall: %s", a.app, exc)
            continue
        out.setdefault(uid, set()).update(endpoints)
    return out


def base_plan(settings: Settings, owner: str) -> Plan:
    """The plan before hosts are resolved and allowances added."""
    ports = parse_port_range(settings.instance_ports)
    public = tuple(p for p in (settings.router_port, settings.router_tls_port) if p)
    return Plan(
        table=TABLE, comment=owner, instance_ports=(ports[0], ports[-1]), public_ports=public
    )


def owner_comment(host_id: str, pid: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host_id)[:64]
    return f"roost runner {safe} pid {pid}"


# ------------------------------------------------------------ keeping it applied


class RunnerFirewall:
    """Keeps the runner's table in place: at start, per assignment, per `run` session."""

    def __init__(
        self,
        plan: Plan,
        nft: nftcmd.Nft | None,
        *,
        live_session: Callable[[str], bool] = lambda _sid: False,
        resolver: Resolver = resolve,
    ) -> None:
        # nft None: the firewall is off (every method passes straight through).
        self.nft = nft
        self.base = plan
        self.live_session = live_session
        self.resolver = resolver
        self.applied: Plan | None = None
        self._instances: list[InstanceAssignment] = []
        self._sessions: dict[str, InstanceAssignment] = {}
        self._starting: set[str] = set()
        self._pending: tuple[list[InstanceAssignment], Forward] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.nft is not None

    @classmethod
    def off(cls) -> RunnerFirewall:
        """No firewall: every method passes straight through."""
        return cls(Plan(), None)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        cluster: ClusterConfig,
        members: Iterable[tuple[str, str]],
        host_id: str,
        *,
        live_session: Callable[[str], bool] = lambda _sid: False,
        nft_argv: Sequence[str] | None = None,
        resolver: Resolver = resolve,
    ) -> RunnerFirewall:
        """Apply the table (no allowances yet), or say loudly why there is none.

        Raises RunnerFirewallError when the runner must not run tenant code
        (ConfigError when a setting is wrong).
        """
        try:
            plan = base_plan(settings, owner_comment(host_id, os.getpid()))
        except ValueError as exc:
            raise ConfigError(f"firewall: {exc}") from None
        mode = settings.firewall
        if mode not in ("on", "off"):
            raise ConfigError(f"ROOST_FIREWALL must be 'on' or 'off', not {mode!r}")
        if mode == "off":
            log.warning(
                "FIREWALL OFF (ROOST_FIREWALL=off): anyone on the network reaches instance "
                "ports and tenant code reaches every platform port (development only)"
            )
            return cls(plan, None)
        if nft_argv is None and os.geteuid() != 0:
            log.warning(
                "FIREWALL OFF: not root, so no nftables table and no per-app users: "
                "instance ports are open to anyone (run as root to protect them)"
            )
            return cls(plan, None)
        try:
            nft = nftcmd.Nft(nft_argv if nft_argv is not None else [nftcmd.locate()])
        except nftcmd.NftError as exc:
            raise _refuse(exc) from None
        members = list(members)
        routers: list[str] = []
        for host in router_hosts(members, host_id):
            routers += await resolver(host)
        hosts: list[str] = []
        for host in platform_hosts(cluster, members, host_id):
            hosts += await resolver(host)
        plan = replace(plan, routers=tuple(routers), platform=tuple(hosts))
        fw = cls(plan, nft, live_session=live_session, resolver=resolver)
        try:
            previous = await nft.comment(TABLE)
            if previous and previous != plan.comment and _alive(previous):
                log.warning("firewall: replacing table inet %s of a live %s", TABLE, previous)
            await fw.sync()
        except (nftcmd.NftError, FirewallError) as exc:
            raise _refuse(exc) from None
        log.info(
            "firewall: table inet %s applied (instance ports %s, routers: %s)",
            TABLE,
            settings.instance_ports,
            ", ".join(routers) or "this host only",
        )
        return fw

    def gate(self, instances: Sequence[InstanceAssignment], forward: Forward) -> None:
        """Hand `instances` to `forward` once their allowances are applied.

        The newest set wins: sets that arrive while one is being applied are
        forwarded once, the newest, after it.
        """
        if self.nft is None:
            forward(list(instances))
            return
        self._pending = (list(instances), forward)
        self._wake.set()

    def guard(self, start: StartRun) -> StartRun:
        """`start` of a `run` session, with its allowances applied first."""
        if self.nft is None:
            return start

        async def guarded(msg: RunStart) -> Msg:
            if msg.session in self._sessions:
                return await start(msg)
            self._sessions[msg.session] = msg.assignment
            self._starting.add(msg.session)
            try:
                await self._sync_or_log()
                return await start(msg)
            finally:
                self._starting.discard(msg.session)

        return guarded

    async def adopt_sessions(self, sessions: Mapping[str, InstanceAssignment]) -> None:
        """`run` sessions a predecessor started (and this runner adopted): their
        allowances, as `guard` gave them at their start, applied again."""
        if self.nft is None or not sessions:
            return
        self._sessions.update(sessions)
        await self._sync_or_log()

    async def run(self) -> None:
        """Apply what `gate` posts, until cancelled; retry a failed apply."""
        if self.nft is None:
            return
        while True:
            try:
                await aio.wait_for(self._wake.wait(), RETRY_S if self._failing() else None)
            except TimeoutError:
                pass
            self._wake.clear()
            pending, self._pending = self._pending, None
            if pending is not None:
                self._instances = pending[0]
            await self._sync_or_log()
            if pending is not None:
                pending[1](pending[0])

    async def sync(self) -> None:
        """Render the plan for what runs now and apply it if it changed."""
        if self.nft is None:
            return
        async with self._lock:
            for sid in list(self._sessions):
                if sid not in self._starting and not self.live_session(sid):
                    del self._sessions[sid]
            plan = replace(self.base, allowances=await self._allowances())
            if plan == self.applied:
                return
            self.applied = None  # until nft says the kernel has it
            await self.nft.apply(render(plan))
            self.applied = plan

    async def _sync_or_log(self) -> None:
        try:
            await self.sync()
        except (nftcmd.NftError, FirewallError) as exc:
            # The table in place stays (the kernel applied nothing): what
            # fails closed is only the service access of what is new.
            log.error("firewall: could not update table inet %s: %s", TABLE, exc)

    async def close(self) -> None:
        """Remove the table, unless another runner has replaced it since."""
        if self.nft is None:
            return
        try:
            removed = await self.nft.remove(TABLE, owner=self.base.comment)
        except nftcmd.NftError as exc:
            log.error("firewall: could not remove table inet %s: %s", TABLE, exc)
            return
        if not removed:
            log.warning("firewall: table inet %s is no longer ours; left in place", TABLE)

    def _failing(self) -> bool:
        return self.applied is None

    async def _allowances(self) -> tuple[Allowance, ...]:
        wanted = service_endpoints([*self._instances, *self._sessions.values()])
        out: set[Allowance] = set()
        for uid, endpoints in wanted.items():
            for host, port in endpoints:
                for address in await self.resolver(host):
                    out.add(Allowance(uid, address, port))
        return tuple(sorted(out))


def _refuse(exc: Exception) -> RunnerFirewallError:
    return RunnerFirewallError(
        f"firewall: {exc}. Refusing to run tenant code with instance ports open to anyone "
        "and platform ports open to tenants; set ROOST_FIREWALL=off to run without "
        "(development only)"
    )


def _alive(comment: str) -> bool:
    m = _OWNER_PID.search(comment)
    if m is None:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
