"""The programs `roost up` supervises: one per role (or per group of roles
sharing a process, roost.cli.uphost), each with its readiness, its metrics
port and, for the router, the listening sockets bound once for the life of
`roost up` (module docstring of roost.cli.up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from roost.cli import httpget, readdress
from roost.cli.client import CliError
from roost.cli.local import free_port, port_free
from roost.proc import activation, spawn
from roost.proc.backoff import Backoff
from roost.proc.children import Policy
from roost.proc.forkserver import ForkServer
from roost.proc.supervise import Process, Program
from roost.settings import Settings

# Between a role's TERM and its KILL.
STOP_GRACE_S = 20.0
# The controller's API must answer within this long of its start.
API_READY_S = 60.0
# Any other role must serve within this long of its start (readiness: the
# servicehost's first start makes its PostgreSQL cluster, on a busy machine).
ROLE_READY_S = 180.0
# A role is restarted 0.5 s after it exits, doubling up to 10 s while it keeps
# exiting; one that ran a minute starts the count again. A configuration
# error (roost.proc.exits) is not restarted: `roost up` stops with it.
ROLE_POLICY = Policy(
    backoff=Backoff(base_s=0.5, max_s=10.0, reset_after_s=60.0), stop_grace_s=STOP_GRACE_S
)


def role_program(
    role: str,
    argv: list[str] | Callable[[], list[str]],
    env: Mapping[str, str] | Callable[[], Mapping[str, str]],
    ready: Callable[[Process], Awaitable[None]] | None = None,
    sockets: Sequence[tuple[str, socket.socket]] = (),
    forks: ForkServer | None = None,
    before: Callable[[], None] | None = None,
) -> Program:
    """A role's daemon; its stderr passes through us, so a fatal exit is
    reported with the role's own last words. `argv` and `env` may be
    functions: asked at each start, after `before` (roost.cli.readdress:
    its ports moved after an exit that said one was in use). `sockets`
    (name, listening socket) are handed to it by the socket activation
    protocol. With `forks`, `argv` (`python -m roost ARGS`) is forked from
    its zygote instead of executed."""
    fds = [(name, sock.fileno()) for name, sock in sockets]

    def command() -> tuple[list[str], Mapping[str, str]]:
        if before is not None:
            before()
        args = argv() if callable(argv) else argv
        return args, env() if callable(env) else env

    async def executed() -> Process:
        args, child_env = command()
        launched = activation.launcher(fds, args) if fds else args
        return await spawn.start(
            launched, env=child_env, stderr=subprocess.PIPE, pass_fds=[fd for _, fd in fds]
        )

    async def forked() -> Process:
        args, child_env = command()
        assert forks is not None and args[1:3] == ["-m", "roost"], args
        # A Forked is what the Supervisor uses of a Process (pid, returncode, wait, stderr).
        return await forks.spawn(args[3:], child_env, fds)  # type: ignore[return-value]

    start = executed if forks is None else forked
    policy = ROLE_POLICY
    if ready is not None:
        policy = dataclasses.replace(policy, ready_timeout_s=ready_timeout(role))
    return Program(role, start, ready=ready, policy=policy)


def api_answers(data: Path) -> Callable[[Process], Awaitable[None]]:
    """The controller's readiness: its API answers /api/health."""

    async def probe(proc: Process) -> None:
        api = json.loads((data / "api.json").read_text())
        ca = api.get("ca", "")
        verify = ssl.create_default_context(cafile=ca) if ca else True
        while True:
            try:
                status, _ = await httpget.get(f"{api['url']}/api/health", verify, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)

    return probe


def ready_timeout(role: str) -> float:
    """How long the role may take to serve after its start."""
    return API_READY_S if role == "controller" else ROLE_READY_S


def router_ports(settings: Settings) -> list[tuple[str, int]]:
    """The router's ports by name: "http", and "https" when TLS is on."""
    ports = [("http", settings.router_port)]
    if settings.router_tls_port:
        ports.append(("https", settings.router_tls_port))
    return ports


def router_sockets(settings: Settings) -> list[tuple[str, socket.socket]]:
    """The router's listening sockets, bound once for the life of `roost up`
    with activation's large backlog."""
    host = settings.bind_host
    out: list[tuple[str, socket.socket]] = []
    for name, port in router_ports(settings):
        try:
            sock = activation.listen(host, port)
        except OSError as exc:
            for _, s in out:
                s.close()
            option = "--router-port" if name == "http" else "--tls-port"
            raise CliError(f"cannot listen on {host}:{port} ({option}): {exc.strerror}") from None
        out.append((name, sock))
    return out


def metrics_env(
    env: Mapping[str, str],
    role: str,
    metrics: dict[str, str],
    data: Path,
    host: str,
    overlaps: bool = False,
) -> Callable[[], dict[str, str]]:
    """`env` with the role's metrics port as DATA/metrics.json lists it at
    each start (roost.cli.readdress moves one another process took). A
    role whose old process may still be ending when its successor starts
    (`overlaps`: the router, handing over) keeps its port while that port
    is free, else takes another and lists it there."""

    def at_start() -> dict[str, str]:
        port = readdress.port_of(metrics[role]) or 0
        if overlaps and not port_free(host, port):
            port = free_port(host)
            metrics[role] = f"http://{host}:{port}/metrics"
            (data / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {**env, "ROOST_METRICS_PORT": str(port)}

    return at_start
