"""Preparing a data directory for the one-host platform that `roost up` runs.

Everything is idempotent: a second `roost up` on the same directory reuses the
keys and the addresses (when still free), so the same apps come back. It all
happens under the daemons' private umask (`roost.daemonize`): keys,
cluster.json and api.json are made 0600 in 0700 directories, and those of an
older version are tightened. The state database and the admin's token are the
controller's: it migrates the one and writes the other at its start
(`roost.controller.bootstrap`); api.json names the token's file.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from roost.controller.admintoken import admin_token_path
from roost.controller.secretbox import FERNET_FILE, ensure_key_file
from roost.daemonize import secure_start
from roost.settings import Settings, parse_port_range
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ROLES, identity, save_peers
from roost.wire.keys import ensure_keypair

# address-book role -> the daemon whose key serves it
SERVED_BY = {
    "controller": "controller",
    "controller-pub": "controller",
    "builder": "builder",
    "images": "builder",
    "servicehost": "servicehost",
    "gateway": "gateway",
    "backupd": "backupd",
}


class AlreadyRunning(Exception):
    pass


def ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The lowest port the kernel gives an outgoing connection (32768 if unknown)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out by this process: not yet bound when the next is chosen, so
# they would look free; a platform asks for a dozen at once (its roles'
# addresses, their metrics) and two alike made one daemon fail every restart.
_GIVEN: set[int] = set()
# Ports `roost up` holds from its choice until the daemon given one starts
# (`hold`, `release`): port -> a socket bound to it.
_HELD: dict[int, socket.socket] = {}


def free_port(host: str = "127.0.0.1", held: bool = False) -> int:
    """A port free now for a daemon to listen on once it starts, below the
    kernel's ephemeral range: a port bound to 0 comes from that range, and
    any outgoing connection made before the daemon binds (a client's, a
    database driver's) may be given it as its own, so the daemon's bind
    failed, at every restart while that connection lasted. `held`: kept
    bound until `release` (see `hold`)."""
    low = ephemeral_low()
    runners = instance_ranges()
    for _ in range(200):
        port = random.randrange(max(1024, low // 3), low)
        if any(port in r for r in runners):
            continue
        if port not in _GIVEN and port_free(host, port):
            _GIVEN.add(port)
            if held:
                hold(host, port)
            return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            if held:
                hold(host, port)
            return port


def hold(host: str, port: int) -> bool:
    """Keep `port` bound, neither listening nor with SO_REUSEADDR, until
    `release`: meanwhile any other process's bind of it fails, and so does
    its look at whether it is free (`port_free`, another platform's
    `free_port`, a test's), which a port merely chosen passed. So the port
    a daemon was given can be taken only between `release`, just before the
    daemon starts, and its bind, not from the moment it was written (the
    daemon binds it itself, with ZeroMQ: this socket is not one it could be
    handed). Best effort: False when it cannot be bound now."""
    if port in _HELD:
        return True
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return False
    _HELD[port] = sock
    return True


def release(ports: Iterable[int]) -> None:
    """Let go of the ports `hold` keeps, of those given: their daemon binds them now."""
    for port in ports:
        sock = _HELD.pop(port, None)
        if sock is not None:
            sock.close()


def instance_ranges() -> list[range]:
    """The runners' instance ports, the default ones and this host's
    configured ones: a daemon's port chosen inside them could be taken by
    an instance while the daemon restarts, or be found free by a runner in
    the moment before the daemon binds it, and the instance's health check
    then passed on the daemon."""
    out = [parse_port_range(Settings().instance_ports)]
    try:
        out.append(parse_port_range(Settings.from_env().instance_ports))
    except ValueError:  # a bad setting: the runner says so itself
        pass
    return out


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def lock_data_dir(data: Path) -> IO[str]:
    """Hold an exclusive lock for the life of `roost up` on this directory."""
    # Searchable but not listable: the builder's unprivileged user must reach
    # DATA/builder; secrets inside (keys/, api.json) are 0700/0600 themselves.
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o711)
    fh = open(data / "up.lock", "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise AlreadyRunning(
            f"another 'roost up' is already running on {data}\n"
            f"to replace its daemons (with this version's): roost --data {data} up --reload\n"
            f"to stop it: roost --data {data} down"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def running_up(data: Path) -> int | None:
    """The pid of the `roost up` that holds DATA's lock, None when none does.

    The lock, not the pid in the file, decides: a pid left by a run that
    ended may belong to another process by now. (Trying the lock takes it
    for an instant: a `roost up` starting at that very instant would say
    it is already running.)"""
    try:
        fh = open(data / "up.lock")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            # Held: the pid follows the lock at once (an instant without it).
            for _ in range(50):
                fh.seek(0)
                text = fh.read().strip()
                if text.isdigit():
                    return int(text)
                time.sleep(0.02)
            return None
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


def prepare_data_dir(data: Path, settings: Settings) -> IO[str]:
    """Everything `roost up` does to DATA before it starts the daemons.

    Returns the lock on the directory, held until `roost up` ends.
    """
    secure_start(data)
    lock = lock_data_dir(data)
    try:
        prepare_cluster(data, settings.bind_host, settings.runner_host_id, held=True)
        write_api_info(data, settings)
    except BaseException:
        lock.close()
        raise
    return lock


def prepare_cluster(
    data: Path, host: str, runner_host_id: str = "", keep_ports: bool = False, held: bool = False
) -> ClusterConfig:
    """Keys, identities and the address book of the one-machine platform.

    A role keeps its previous port while it is free; with `keep_ports`
    whether or not (a take-over by hand-over: each old daemon goes before
    its successor binds, and the others keep reaching the same addresses).
    `held`: each port is held (`hold`) until its daemon starts.

    A keypair per role, each listed in peers.json as that role on this
    machine, named by the runner's host id (the id its heartbeats must carry);
    the state database's secrets key for the controller (fernet.key).
    """
    keys = data / "keys"
    # Secrets sealed before fernet.key existed used a key derived from this.
    had_controller_key = (keys / "controller.key_secret").exists()
    pairs = {role: ensure_keypair(keys, role) for role in ROLES}
    from roost.runner.layout import Layout  # only `roost up` needs the runner's layout

    machine = Layout(data).host_id(runner_host_id)
    save_peers(keys, {pairs[role].public: identity(role, machine) for role in ROLES})
    ensure_key_file(keys / FERNET_FILE, pairs["controller"].secret if had_controller_key else None)
    path = data / "cluster.json"
    old = ClusterConfig.load(path) if path.exists() else ClusterConfig(name="local")
    endpoints: dict[str, list[Endpoint]] = {}
    for role, owner in SERVED_BY.items():
        key = pairs[owner].public_text
        previous = old.of(role)
        port = 0
        if previous and previous[0].public_key == key:
            _, _, p = previous[0].address.rpartition(":")
            if p.isdigit() and int(p) not in _GIVEN and (keep_ports or port_free(host, int(p))):
                port = int(p)
                _GIVEN.add(port)
                if held:
                    hold(host, port)
        endpoints[role] = [Endpoint(f"tcp://{host}:{port or free_port(host, held)}", key)]
    cluster = ClusterConfig(name=old.name, endpoints=endpoints)
    cluster.save(path)
    return cluster


def write_api_info(data: Path, settings: Settings) -> None:
    # Off loopback the controller serves HTTPS: its certificate is made now
    # (the controller reuses it) so that the CLI can be told to trust it.
    from roost.controller.apitls import api_certificate, api_url

    tls = api_certificate(data, settings)
    info = data / "api.json"
    tmp = info.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "url": api_url(settings),
                # Written by the controller at its start, before its API answers.
                "token_file": str(admin_token_path(data)),
                "router": f"http://{settings.bind_host}:{settings.router_port}",
                **({"ca": str(tls.certfile)} if tls is not None and tls.self_signed else {}),
            },
            fh,
        )
    os.replace(tmp, info)
