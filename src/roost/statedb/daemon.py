"""`roost statedb`: this host's etcd member and Patroni, supervised.

Reads DATA/statedb.json (from the host's bundle), renders what the plan
says (roost.statedb.plan) into DATA/statedb/, and keeps etcd and Patroni
running with the process toolkit's Supervisor: restarted with backoff
when they exit, stopped in reverse order (Patroni first, which stops its
PostgreSQL and hands the leader key over; then etcd). Both run as the
unprivileged `roost-statedb` user (PostgreSQL refuses root), which owns
DATA/statedb.

Patroni starts PostgreSQL detached from itself, so a Patroni restarted by
the supervisor finds its PostgreSQL running and takes it over; PostgreSQL
is not a child here, and stopping Patroni (SIGTERM) is what stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import msgspec

from roost import patroni
from roost.daemonize import run_daemon
from roost.proc.exits import ConfigError
from roost.proc.supervise import Program
from roost.settings import Settings
from roost.statedb.plan import (
    STATE_FILE,
    StateDbPlan,
    bootstrap_sql,
    etcd_argv,
    patroni_config,
)
from roost.sysuser import Account

log = logging.getLogger("roost.statedb")

USER = "roost-statedb"
INSTALL_HINT = patroni.INSTALL_HINT
# Patroni stops PostgreSQL (fast shutdown) before it exits.
PATRONI_STOP_GRACE_S = 60.0


def load_plan(data_dir: Path) -> StateDbPlan:
    path = data_dir / STATE_FILE
    try:
        plan = msgspec.json.decode(path.read_bytes(), type=StateDbPlan)
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: this host runs no part of the state database "
            "(roost cluster init --state-hosts/--etcd-hosts, then cluster join)"
        ) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not plan.host:
        raise ConfigError(f"{path} names no host")
    return plan


def programs(plan: StateDbPlan, home: Path, who: Account) -> list[Program]:
    """What this host runs, in start order; the files they read written first."""
    out = []
    if plan.host in plan.etcd:
        patroni.private_dir(home / "etcd", who)
        argv = etcd_argv(plan, patroni.binary("etcd"), home / "etcd")
        out.append(patroni.program("etcd", argv, home, who, 10.0))
    if plan.host in plan.patroni:
        for sub in ("run", "pgdata"):
            patroni.private_dir(home / sub, who)
        config = patroni_config(plan, home, patroni.pg_bin_dir())
        # JSON is YAML: Patroni reads it as its configuration file.
        patroni.private_file(home / "patroni.yml", json.dumps(config, indent=1), who)
        patroni.private_file(home / "bootstrap.sql", bootstrap_sql(plan), who)
        argv = [patroni.binary("patroni"), str(home / "patroni.yml")]
        out.append(patroni.program("patroni", argv, home, who, PATRONI_STOP_GRACE_S))
    return out


async def serve(data_dir: Path, stop: asyncio.Event) -> None:
    plan = load_plan(data_dir)
    home = data_dir / "statedb"
    parts = [
        p for p, hosts in (("etcd", plan.etcd), ("patroni", plan.patroni)) if plan.host in hosts
    ]
    log.info("state database host %s: %s", plan.host, ", ".join(parts))
    await patroni.supervise(USER, home, lambda who: programs(plan, home, who), stop, log)


def run(data_dir: Path, settings: Settings, name: str = "statedb") -> None:
    run_daemon("statedb", lambda stop: serve(data_dir, stop))
