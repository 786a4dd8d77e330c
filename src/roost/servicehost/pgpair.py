"""A servicehost pair's PostgreSQL: one Patroni cluster over two servicehosts.

In a cluster, servicehosts come in pairs. Each pair's PostgreSQL, which
holds the databases of the apps placed on the pair (one per app), is a
Patroni cluster: the primary on one servicehost, a synchronous streaming
standby on the other, under its own scope (`apps-<pair>`) in the same etcd
as the state database. No election is made here: etcd's Raft and Patroni's
leader key decide. One machine keeps the servicehost's single PostgreSQL
(postgres.py): a pair exists only when `roost cluster init` names one.

Each of the two hosts has DATA/pgpair.json (`PairPlan`, with this host in
`host`); `serve` renders Patroni's configuration from it (roost.patroni) into
DATA/pgpair/ and supervises Patroni as the unprivileged `roost-pgpair`
user. Ports differ from the servicehost's own PostgreSQL (5432) and the
state database's (5433/8008), so one host may run all three.

Commits wait for the standby to have written the WAL (synchronous_commit
remote_write), not to have flushed it to its disk: an acknowledged write
outlives the loss of either host, and is lost only if the primary dies and
the standby's own operating system crashes before its next flush, both at
once. Waiting for the flush too (`on`) took four Python writers' single-row
throughput to 0.37 of a standalone server's; remote_write kept ~0.9
(issue 16 asks >= 0.8). bench/stateful_failover.py now measures the
database's write capacity (its best rate over 16, 32 and 64 pgbench
clients) and the 16-client rate beside it, the same primary paired and
alone in turns (docs/architecture.md has the figures, where a commit's
time goes, and the settings tried and not kept).

Apps reach the pair through their runner's data proxy (roost.runner.dataproxy),
which checks each member's Patroni REST `GET /primary`; `listener_servers`
says what that listener points at.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import msgspec

from roost import patroni
from roost.daemonize import run_daemon
from roost.proc.exits import ConfigError
from roost.proc.supervise import Program
from roost.servicehost.names import BACKUP_ROLE
from roost.settings import Settings
from roost.sysuser import Account

log = logging.getLogger("roost.servicehost")

PAIR_FILE = "pgpair.json"
USER = "roost-pgpair"
PATRONI_STOP_GRACE_S = 60.0
# The first pair's port on the runners' data proxy; the next pairs' follow.
PROXY_PORT_BASE = 6432


class PairError(ValueError):
    """The hosts named cannot make a pair."""


class PairPlan(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # the pair's name, e.g. "pair-1"
    hosts: list[str]  # its two servicehosts' addresses
    etcd: list[str]  # the etcd members (the state database's)
    host: str = ""  # whose file this is ("" in the plan itself)
    etcd_client_port: int = 2379
    pg_port: int = 5434
    rest_port: int = 8009
    # Where every runner's data proxy listens for this pair (its address is
    # the runners' proxy address, roost.runner.dataproxy).
    proxy_port: int = 6432
    # Shorter than the state database's 15/3/5 (issue 16 asks an app's writes
    # back within 15 s). Where a failover's seconds went at 12/2/5 (one run,
    # from Patroni's, etcd's and HAProxy's logs: 18.3 s without a write):
    # the dead primary's host was also etcd's leader, and etcd's new leader
    # (2.2 s later) renews every lease for ttl + its election timeout (1 s),
    # so the leader key lasted 15.4 s; then the standby asks the old
    # leader's REST API before it promotes (Patroni 3.0: 2 s, a fixed
    # timeout, to a host that drops packets); then promotion, HAProxy's
    # next check and the app's reconnect (~0.5 s). Only the ttl is ours to
    # cut: at 7 the worst case above is ~12.7 s, ~9-10 s when etcd's leader
    # lives on. Still Patroni's rule, loop_wait + 2 * retry_timeout <= ttl,
    # with the primary renewing its lease every second; retry_timeout 3
    # outlasts etcd's re-election (2.2 s here) when the standby's host, etcd's
    # leader, dies: the primary keeps its key instead of demoting itself.
    ttl: int = 7
    loop_wait: int = 1
    retry_timeout: int = 3
    superuser_password: str = ""
    replication_password: str = ""
    rest_password: str = ""
    # Servicehosts (addresses) lost for good that were members, replaced
    # (pgreplace.replaced): their sentinels are no longer counted or asked
    # by this pair's members (servicehost/redispairs.py).
    lost: list[str] = []

    @property
    def scope(self) -> str:
        return f"apps-{self.name}"


def new_pair(name: str, hosts: list[str], etcd: list[str], token: Any = None) -> PairPlan:
    """A pair with fresh passwords; PairError when the hosts cannot make one."""
    token = token or secrets.token_urlsafe
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,50}", name):
        raise PairError(f"pair name {name!r}: use lower-case letters, digits and '-'")
    if len(hosts) != 2 or hosts[0] == hosts[1]:
        raise PairError(f"a pair is two different servicehosts, got {hosts}")
    if len(etcd) < 3 or len(etcd) % 2 == 0:
        raise PairError(f"etcd needs an odd number of members, three or more, got {len(etcd)}")
    return PairPlan(
        name=name,
        hosts=list(hosts),
        etcd=list(etcd),
        superuser_password=token(24),
        replication_password=token(24),
        rest_password=token(24),
    )


def plan_pairs(
    servicehosts: list[str], etcd: list[str], token: Any = None
) -> tuple[list[PairPlan], list[str]]:
    """`cluster init`'s pairs: the servicehosts two by two in the order
    named (pair-1, pair-2, ...), each on its own proxy port; and the
    servicehost left over when their number is odd (a spare: it keeps its
    own PostgreSQL and takes no app while a pair has room)."""
    pairs = [
        msgspec.structs.replace(
            new_pair(f"pair-{i // 2 + 1}", servicehosts[i : i + 2], etcd, token),
            proxy_port=PROXY_PORT_BASE + i // 2,
        )
        for i in range(0, len(servicehosts) - 1, 2)
    ]
    return pairs, servicehosts[2 * len(pairs) :]


def for_host(plan: PairPlan, host: str) -> PairPlan:
    if host not in plan.hosts:
        raise PairError(f"{host} is not a servicehost of pair {plan.name}")
    return msgspec.structs.replace(plan, host=host)


def member(plan: PairPlan) -> patroni.Member:
    # Apps' databases: more sessions than the state database's; commits on
    # the standby's write (the module docstring says why).
    # backupd streams the pair's WAL and takes its base backups as the
    # backup role (servicehost/pairbackup.py), which needs replication.
    hba = tuple(
        f"host replication {BACKUP_ROLE} {net} scram-sha-256" for net in ("0.0.0.0/0", "::/0")
    )
    return patroni.member_of(
        plan, {"max_connections": 500, "synchronous_commit": "remote_write"}, hba
    )


def listener_servers(plan: PairPlan) -> list[tuple[str, int, int]]:
    """(host, PostgreSQL port, Patroni REST port) of each member: the data
    proxy's servers for this pair (roost.runner.dataproxy.ProxyServer)."""
    return [(patroni.bare(h), plan.pg_port, plan.rest_port) for h in plan.hosts]


def admin_url(plan: PairPlan, database: str = "postgres") -> str:
    """The superuser's libpq URL to whichever member is the primary now."""
    hosts = ",".join(patroni.bare(h) for h in plan.hosts)
    ports = ",".join(str(plan.pg_port) for _ in plan.hosts)
    return (
        f"postgresql://{patroni.SUPERUSER}:{plan.superuser_password}@/{database}"
        f"?host={hosts}&port={ports}&target_session_attrs=read-write"
    )


# ------------------------------------------------------------ running a member


def load_plan(data_dir: Path) -> PairPlan:
    path = data_dir / PAIR_FILE
    try:
        plan = msgspec.json.decode(path.read_bytes(), type=PairPlan)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: this servicehost is in no pair") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if plan.host not in plan.hosts:
        raise ConfigError(f"{path} names no member of pair {plan.name}")
    return plan


def prepare(plan: PairPlan, home: Path, who: Account) -> list[str]:
    """Patroni's files under `home`; its command line."""
    for sub in ("", "run", "pgdata"):
        patroni.private_dir(home / sub if sub else home, who)
    config = patroni.config(member(plan), home, patroni.pg_bin_dir())
    # JSON is YAML: Patroni reads it as its configuration file.
    patroni.private_file(home / "patroni.yml", json.dumps(config, indent=1), who)
    # Nothing to bootstrap: apps' databases are made when apps are placed.
    patroni.private_file(home / "bootstrap.sql", "SELECT 1;\n", who)
    return [patroni.binary("patroni"), str(home / "patroni.yml")]


async def serve(data_dir: Path, stop: asyncio.Event) -> None:
    plan = load_plan(data_dir)
    stuck_after_s = Settings.from_env().pair_stuck_after_s
    if not stuck_after_s > 0:
        raise ConfigError(f"ROOST_PAIR_STUCK_AFTER_S must be above 0 (got {stuck_after_s})")
    home = data_dir / "pgpair"

    def programs(who: Account) -> list[Program]:
        argv = prepare(plan, home, who)
        return [patroni.program("patroni", argv, home, who, PATRONI_STOP_GRACE_S)]

    log.info("pair %s: this servicehost's Patroni member (%s)", plan.name, plan.host)
    from roost.servicehost import pgrejoin  # (it imports this module)

    async with asyncio.TaskGroup() as tg:
        # Made again from the primary when it cannot stream any more.
        rejoining = tg.create_task(pgrejoin.watch(lambda: plan, stuck_after_s))
        await patroni.supervise(USER, home, programs, stop, log)
        rejoining.cancel()


def main(argv: list[str]) -> None:
    """`python -m roost.servicehost.pgpair DATA`: this host's member of its pair."""
    if len(argv) != 1:
        raise SystemExit("usage: python -m roost.servicehost.pgpair DATA")
    data_dir = Path(argv[0])
    run_daemon("pgpair", lambda stop: serve(data_dir, stop))


if __name__ == "__main__":
    main(sys.argv[1:])
