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
import dataclasses
import glob
import json
import logging
import os
import shutil
from pathlib import Path

import msgspec

from roost.daemonize import run_daemon
from roost.proc import children as C
from roost.proc import spawn
from roost.proc.exits import ConfigError
from roost.proc.supervise import Program, Supervisor
from roost.settings import Settings
from roost.statedb.plan import (
    STATE_FILE,
    StateDbPlan,
    bootstrap_sql,
    etcd_argv,
    patroni_config,
)
from roost.sysuser import Account, check_reachable, ensure_system_user

log = logging.getLogger("roost.statedb")

USER = "roost-statedb"
INSTALL_HINT = "apt-get install etcd-server patroni (scripts/install does it as root)"
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


def _binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else ""
    )
    if not found:
        raise ConfigError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def pg_bin_dir() -> Path:
    """The newest PostgreSQL's server binaries (Debian keeps them off PATH)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
        key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise ConfigError("PostgreSQL is not installed: apt-get install postgresql")


def _private(path: Path, content: str, who: Account) -> None:
    """A file only the statedb user reads (it holds passwords)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    if who.dropped:
        os.chown(tmp, who.uid, who.gid)
    os.replace(tmp, path)


def _directory(path: Path, who: Account) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if who.dropped:
        os.chown(path, who.uid, who.gid)
    path.chmod(0o700)


def _program(name: str, argv: list[str], home: Path, who: Account, grace: float) -> Program:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    async def start() -> asyncio.subprocess.Process:
        setup = spawn.child_setup(
            uid=who.uid if who.dropped else None, gid=who.gid if who.dropped else None, umask=0o077
        )
        return await spawn.start(argv, env=env, cwd=home, setup=setup)

    policy = dataclasses.replace(C.Policy(), stop_grace_s=grace)
    return Program(name, start, policy=policy)


def programs(plan: StateDbPlan, home: Path, who: Account) -> list[Program]:
    """What this host runs, in start order; the files they read written first."""
    out = []
    if plan.host in plan.etcd:
        _directory(home / "etcd", who)
        argv = etcd_argv(plan, _binary("etcd"), home / "etcd")
        out.append(_program("etcd", argv, home, who, 10.0))
    if plan.host in plan.patroni:
        for sub in ("run", "pgdata"):
            _directory(home / sub, who)
        config = patroni_config(plan, home, pg_bin_dir())
        # JSON is YAML: Patroni reads it as its configuration file.
        _private(home / "patroni.yml", json.dumps(config, indent=1), who)
        _private(home / "bootstrap.sql", bootstrap_sql(plan), who)
        argv = [_binary("patroni"), str(home / "patroni.yml")]
        out.append(_program("patroni", argv, home, who, PATRONI_STOP_GRACE_S))
    return out


async def serve(data_dir: Path, stop: asyncio.Event) -> None:
    plan = load_plan(data_dir)
    who = ensure_system_user(USER)
    home = data_dir / "statedb"
    _directory(home, who)
    check_reachable(who.name, who.uid, home)
    sup = Supervisor(logger=log)
    for program in programs(plan, home, who):
        sup.add(program)
    parts = [
        p for p, hosts in (("etcd", plan.etcd), ("patroni", plan.patroni)) if plan.host in hosts
    ]
    log.info("state database host %s: %s", plan.host, ", ".join(parts))
    await sup.run_until(stop)


def run(data_dir: Path, settings: Settings, name: str = "statedb") -> None:
    run_daemon("statedb", lambda stop: serve(data_dir, stop))
