"""What etcd and Patroni are told, rendered from one plan. Pure: no I/O.

`roost cluster init` makes one `StateDbPlan` (member hosts, ports, fresh
passwords) and writes `for_host(plan, host)` into each etcd or Patroni
host's bundle as statedb.json; the controllers get `state_url(plan)` in
cluster.json. On the host, `roost statedb` renders the command line of
its etcd member (`etcd_argv`) and Patroni's configuration
(`patroni_config`, `bootstrap_sql`) from that file alone.

Choices, and why:
  - synchronous_mode on: a commit is acknowledged only once the standby
    has it, and Patroni promotes only the standby named in its /sync key,
    so a failover loses no acknowledged write. Not strict: when the
    standby is gone the primary goes on alone (Patroni then names no sync
    standby, so the lagging standby cannot be promoted over it); strict
    would stop every write of the control plane for the loss of one host.
  - ttl 15 / loop_wait 3 / retry_timeout 5 (Patroni's rule: loop_wait +
    2 * retry_timeout <= ttl): a dead primary's leader key expires within
    15 s and the standby takes over on its next loop, inside the 30 s the
    controllers may be without a database.
  - PostgreSQL on 5433, not 5432: a state host may also run an OS
    PostgreSQL or a servicehost's.
  - The controllers' account (`roost`) owns the `roost` database and is
    no superuser; Patroni alone holds the superuser and replication
    passwords. Secrets go only to the hosts that run Patroni.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import msgspec

from roost import patroni

STATE_FILE = "statedb.json"
DATABASE = "roost"
ACCOUNT = "roost"
SUPERUSER = patroni.SUPERUSER
REPLICATOR = patroni.REPLICATOR
REST_USER = patroni.REST_USER
WEED_ACCOUNT = "roost_weed"  # the shared tree's filers' (datadir/weedplan.STORE_NAME)


class PlanError(ValueError):
    """The hosts named cannot make a state database cluster."""


class StateDbPlan(msgspec.Struct, frozen=True, kw_only=True):
    scope: str  # Patroni's cluster name; etcd's cluster token
    etcd: list[str]  # etcd member hosts (an odd number, three or more)
    patroni: list[str]  # PostgreSQL hosts: a primary and its synchronous standby
    host: str = ""  # whose file this is ("" in the plan itself)
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    pg_port: int = 5433
    rest_port: int = 8008
    ttl: int = 15
    loop_wait: int = 3
    retry_timeout: int = 5
    # Secrets: on Patroni hosts only ("" elsewhere).
    superuser_password: str = ""
    replication_password: str = ""
    roost_password: str = ""
    rest_password: str = ""
    # The shared tree's filers' own role and database (roost.datadir.weedstore;
    # "" when cluster init gave them none): made here, as the controllers'
    # account cannot make a role.
    weed_password: str = ""


def new_plan(
    scope: str, etcd: list[str], patroni: list[str], token: Any = secrets.token_urlsafe
) -> StateDbPlan:
    """A plan with fresh passwords; PlanError when the hosts cannot make one."""
    if len(etcd) < 3 or len(etcd) % 2 == 0:
        raise PlanError(
            f"etcd needs an odd number of hosts, three or more (a majority must outlive "
            f"a lost host), got {len(etcd)}"
        )
    if len(set(etcd)) != len(etcd) or len(set(patroni)) != len(patroni):
        raise PlanError("a host is named twice")
    if len(patroni) != 2:
        raise PlanError(
            f"the state database takes two hosts (a primary and its synchronous standby), "
            f"got {len(patroni)}"
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", scope):
        raise PlanError(f"cluster name {scope!r}: use lower-case letters, digits and '-'")
    return StateDbPlan(
        scope=scope,
        etcd=list(etcd),
        patroni=list(patroni),
        superuser_password=token(24),
        replication_password=token(24),
        roost_password=token(24),
        rest_password=token(24),
    )


def etcd_plan(scope: str, etcd: list[str]) -> StateDbPlan:
    """etcd alone (no Patroni of the state database): the consensus store
    of the servicehost pairs when the state database is named by URL."""
    if len(etcd) < 3 or len(etcd) % 2 == 0:
        raise PlanError(
            f"etcd needs an odd number of hosts, three or more (a majority must outlive "
            f"a lost host), got {len(etcd)}"
        )
    if len(set(etcd)) != len(etcd):
        raise PlanError("a host is named twice")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", scope):
        raise PlanError(f"cluster name {scope!r}: use lower-case letters, digits and '-'")
    return StateDbPlan(scope=scope, etcd=list(etcd), patroni=[])


def hosts_of(plan: StateDbPlan) -> list[str]:
    """Every host that runs a part of it, in the order named."""
    return list(dict.fromkeys([*plan.etcd, *plan.patroni]))


def for_host(plan: StateDbPlan, host: str) -> StateDbPlan:
    """`host`'s statedb.json: the secrets only where Patroni runs."""
    if host not in hosts_of(plan):
        raise PlanError(f"{host} runs no part of the state database")
    if host in plan.patroni:
        return msgspec.structs.replace(plan, host=host)
    return msgspec.structs.replace(
        plan,
        host=host,
        superuser_password="",
        replication_password="",
        roost_password="",
        rest_password="",
        weed_password="",
    )


def state_url(plan: StateDbPlan) -> str:
    """The controllers' URL: both members, the read-write one chosen at connect.

    libpq tries the hosts in turn and keeps the first that accepts writes
    (target_session_attrs), so a new connection finds the primary wherever
    Patroni put it. The host and port lists are libpq's, passed through by
    SQLAlchemy, and the URL stays one pg_dump also takes.
    """
    hosts = ",".join(patroni.bare(h) for h in plan.patroni)
    ports = ",".join(str(plan.pg_port) for _ in plan.patroni)
    return (
        f"postgresql+psycopg://{ACCOUNT}:{plan.roost_password}@/{DATABASE}"
        f"?host={hosts}&port={ports}&target_session_attrs=read-write"
    )


def etcd_name(host: str) -> str:
    return "etcd-" + re.sub(r"[^A-Za-z0-9]+", "-", patroni.bare(host)).strip("-")


def etcd_argv(plan: StateDbPlan, etcd: str, data_dir: Path) -> list[str]:
    """This host's etcd member: the same initial cluster on every member."""
    me = patroni.url_host(plan.host)
    peers = ",".join(
        f"{etcd_name(h)}=http://{patroni.url_host(h)}:{plan.etcd_peer_port}" for h in plan.etcd
    )
    return [
        etcd,
        "--name", etcd_name(plan.host),
        "--data-dir", str(data_dir),
        "--listen-peer-urls", f"http://{me}:{plan.etcd_peer_port}",
        "--initial-advertise-peer-urls", f"http://{me}:{plan.etcd_peer_port}",
        "--listen-client-urls", f"http://{me}:{plan.etcd_client_port}",
        "--advertise-client-urls", f"http://{me}:{plan.etcd_client_port}",
        "--initial-cluster", peers,
        "--initial-cluster-token", plan.scope,
        "--initial-cluster-state", "new",  # ignored once the data directory has a member
        "--logger", "zap",
        "--log-level", "warn",
    ]  # fmt: skip


def patroni_config(plan: StateDbPlan, home: Path, bin_dir: Path) -> dict[str, Any]:
    """Patroni's configuration for this host (roost.patroni renders it)."""
    return patroni.config(member(plan), home, bin_dir)


def member(plan: StateDbPlan) -> patroni.Member:
    """This host as a member of the state database's Patroni cluster."""
    return patroni.member_of(plan)


def bootstrap_sql(plan: StateDbPlan) -> str:
    """Run once, by the first primary after initdb: the controllers' account and database."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", plan.roost_password):
        raise PlanError("the roost account's password must be URL-safe base64")
    sql = (
        f"CREATE ROLE {ACCOUNT} LOGIN PASSWORD '{plan.roost_password}';\n"
        f"CREATE DATABASE {DATABASE} OWNER {ACCOUNT};\n"
    )
    if plan.weed_password:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", plan.weed_password):
            raise PlanError("the filers' password must be URL-safe base64")
        sql += (
            f"CREATE ROLE {WEED_ACCOUNT} LOGIN PASSWORD '{plan.weed_password}';\n"
            f"CREATE DATABASE {WEED_ACCOUNT} OWNER {WEED_ACCOUNT};\n"
        )
    return sql
