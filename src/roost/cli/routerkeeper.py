"""`roost router-keeper`: a router host's listening sockets, held across
router replacements, where neither systemd (`roost-router.socket`) nor
`roost up` holds them.

Theory of operation. The keeper binds the router's ports once, with
activation's large backlog, and runs the router on them by socket
activation (`roost.proc.activation`), restarting it should it exit (the
process toolkit's supervisor, as `roost up` does). SIGHUP replaces the
router: the new one starts at once on the same sockets and the old one is
sent TERM, stops accepting and drains, while connections wait in the shared
backlog for whichever accepts first. SIGTERM or SIGINT: the router is sent
TERM and the keeper exits once it has gone, closing the ports.

`--take-over` replaces a router that bound its port itself, as 0.1.0's did:
the keeper's socket joins the SO_REUSEPORT group of the old router's
sockets on that port and steers every new connection of the group to
itself (`activation.listen(join=True)`; a socket bound without SO_REUSEPORT,
0.1.0's with one worker, is given it first: `takeover.open_to_join`), and
net.ipv4.tcp_migrate_req is set, so that what waits in the old sockets'
backlogs moves to the keeper's when they close (Linux 5.14+). The old
router then gets no new connection; whoever asked for the take-over stops
it once the keeper's router serves (`--pidfile` names it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click

from roost.cli.client import CliError
from roost.cli.takeover import open_to_join
from roost.proc import activation, spawn
from roost.proc.backoff import Backoff
from roost.proc.children import Policy
from roost.proc.exits import ExitCode, exit_for
from roost.proc.supervise import Process, Program, Supervisor
from roost.settings import Settings

ROUTER = "router"
# How long a replaced router may drain (ROOST_ROUTER_DRAIN_S, 10 s, and margin).
REPLACE_TIMEOUT_S = 60.0
POLICY = Policy(backoff=Backoff(base_s=0.5, max_s=10.0, reset_after_s=60.0), stop_grace_s=30.0)


def _say(msg: str) -> None:
    click.echo(f"roost router-keeper: {msg}", err=True)


def bind(
    host: str, ports: list[tuple[str, int]], take_over: bool
) -> list[tuple[str, socket.socket]]:
    """The sockets to hold: (name, socket) per (name, port); CliError naming
    the port that cannot be had."""
    out: list[tuple[str, socket.socket]] = []
    for name, port in ports:
        try:
            if take_over:
                open_to_join(host, port)
            out.append((name, activation.listen(host, port, join=take_over)))
        except OSError as exc:
            for _, sock in out:
                sock.close()
            what = f"cannot listen on {host}:{port} ({name}): {exc.strerror}"
            raise CliError(what, ExitCode.UNAVAILABLE) from None
    return out


def write_pid(pidfile: Path, pid: int) -> None:
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, pidfile)


async def _track(sup: Supervisor, pidfile: Path) -> None:
    """Keep `pidfile` naming the router that serves (replaced, or restarted after a crash)."""
    written = 0
    while True:
        pid = sup.pid(ROUTER)
        if pid and pid != written:
            write_pid(pidfile, pid)
            written = pid
        await asyncio.sleep(0.1)


async def keep(
    sockets: list[tuple[str, socket.socket]], argv: list[str], pidfile: Path | None
) -> None:
    fds = [(name, sock.fileno()) for name, sock in sockets]
    command = activation.launcher(fds, argv)

    async def start() -> Process:
        return await spawn.start(command, pass_fds=[fd for _, fd in fds], stderr=subprocess.PIPE)

    sup = Supervisor(say=_say)
    stop = asyncio.Event()
    replacing: set[asyncio.Task[tuple[int, int]]] = set()

    def replace() -> None:
        task = asyncio.ensure_future(
            sup.replace(ROUTER, signal.SIGTERM, REPLACE_TIMEOUT_S, overlap=True)
        )
        replacing.add(task)
        task.add_done_callback(replacing.discard)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, replace)
    sup.add(Program(ROUTER, start, policy=POLICY))
    async with asyncio.TaskGroup() as tg:
        tracking = tg.create_task(_track(sup, pidfile)) if pidfile is not None else None
        try:
            await sup.run_until(stop)
        finally:
            if tracking is not None:
                tracking.cancel()
            for task in list(replacing):
                task.cancel()


@click.command("router-keeper")
@click.option("--host", default=None, help="address to listen on (default: ROOST_BIND_HOST)")
@click.option("--port", type=int, default=None, help="HTTP port (default: ROOST_ROUTER_PORT)")
@click.option(
    "--tls-port", type=int, default=None, help="HTTPS port (default: ROOST_ROUTER_TLS_PORT; 0: off)"
)
@click.option(
    "--take-over",
    is_flag=True,
    help="join the ports' SO_REUSEPORT group of a router that bound them itself "
    "(0.1.0's) and take every new connection from it",
)
@click.option(
    "--pidfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="file kept naming the router's pid",
)
@click.argument("router_argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def router_keeper(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    tls_port: int | None,
    take_over: bool,
    pidfile: Path | None,
    router_argv: tuple[str, ...],
) -> None:
    """Hold the router's ports and run the router on them (SIGHUP: replace it).

    ROUTER_ARGV (after --) is the router's command, by default this Roost's
    `roost --data DATA router`.
    """
    settings = Settings.from_env(router_port=port, router_tls_port=tls_port)
    where = host or settings.bind_host
    ports = [("http", settings.router_port)]
    if settings.router_tls_port:
        ports.append(("https", settings.router_tls_port))
    data: Path = ctx.obj["data"].resolve()
    argv = list(router_argv) or [sys.executable, "-m", "roost", "--data", str(data), "router"]
    if take_over and not activation.allow_migration():
        _say("net.ipv4.tcp_migrate_req cannot be set: connections waiting for the old router "
             "when it closes its port are reset")  # fmt: skip
    sockets = bind(where, ports, take_over)
    try:
        asyncio.run(keep(sockets, argv, pidfile))
    except Exception as exc:  # the router's fatal exit, passed on with its status
        code, message = exit_for(exc)
        raise CliError(message, code) from None
    finally:
        for _, sock in sockets:
            sock.close()
