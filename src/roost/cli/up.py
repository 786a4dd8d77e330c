"""`roost up`: the whole platform on this machine, one OS process per role.

Theory of operation (gunicorn's arbiter, in asyncio): signals only set the
stop event; one loop waits for either a child to exit or stop. A child that
exits while we are running is restarted after a backoff that grows with quick
successive crashes; on stop, children are stopped in reverse start order,
each with TERM, a grace period, then KILL, and every child also dies with us
(PR_SET_PDEATHSIG) so nothing outlives `roost up`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
from click.core import ParameterSource

from roost import aio
from roost.cli.client import CliError
from roost.cli.datadir import check_reachable, make_parents, older_local_dir
from roost.cli.local import AlreadyRunning, free_port, prepare_data_dir
from roost.controller.apitls import api_url
from roost.procs import (
    become_subreaper,
    die_with_parent,
    kill_descendants,
    reap_adopted,
    terminate,
)
from roost.servicehost.binaries import missing_hint
from roost.settings import Settings

STOP_GRACE_S = 20.0


def restart_delay(recent_crashes: int) -> float:
    """Backoff before restarting a child: 0.5 s doubling, capped at 10 s."""
    return min(0.5 * 2 ** max(recent_crashes - 1, 0), 10.0)


@dataclass
class Child:
    role: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    crashes: int = 0
    history: list[float] = field(default_factory=list)


def _say(msg: str) -> None:
    click.echo(f"roost up: {msg}", err=True)


async def _start(child: Child) -> None:
    child.proc = await asyncio.create_subprocess_exec(
        *child.argv, env=child.env, preexec_fn=die_with_parent
    )
    child.started_at = time.monotonic()


async def _wait_api(
    url: str, proc: asyncio.subprocess.Process, timeout: float = 60.0, ca: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    verify = ssl.create_default_context(cafile=ca) if ca else True
    async with httpx.AsyncClient(verify=verify) as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise CliError(f"the controller exited with status {proc.returncode}")
            try:
                r = await http.get(f"{url}/api/health", timeout=1.0)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise CliError(f"the controller API did not answer at {url} within {timeout:.0f}s")


async def _reap_adopted(known: Callable[[], set[int]]) -> None:
    while True:
        await asyncio.sleep(1.0)
        reap_adopted(known())


async def supervise(
    data: Path, settings: Settings, with_services: bool, ready: asyncio.Event | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    become_subreaper()
    base = [sys.executable, "-m", "roost", "--data", str(data)]
    # Every child sees the same ports (the controller prints app URLs with the
    # router's port); each gets its own metrics port, listed in DATA/metrics.json.
    env = dict(os.environ)
    env.update(
        ROOST_API_PORT=str(settings.api_port),
        ROOST_ROUTER_PORT=str(settings.router_port),
        ROOST_ROUTER_TLS_PORT=str(settings.router_tls_port),
        ROOST_SSH_PORT=str(settings.ssh_port),
    )
    metrics: dict[str, str] = {"controller": f"{api_url(settings)}/metrics"}
    children: list[Child] = []

    def children_pids() -> set[int]:
        return {c.proc.pid for c in children if c.proc is not None}

    for role, extra in (
        ("controller", ["--api-port", str(settings.api_port)]),
        ("builder", []),
        ("runner", []),
        ("router", ["--port", str(settings.router_port)]),
        ("gateway", ["--port", str(settings.ssh_port)]),
        *([("servicehost", [])] if with_services else []),
    ):
        child_env = dict(env)
        if role != "controller":
            port = free_port(settings.bind_host)
            child_env["ROOST_METRICS_PORT"] = str(port)
            metrics[role] = f"http://{settings.bind_host}:{port}/metrics"
        children.append(Child(role, [*base, role, *extra], child_env))
    (data / "metrics.json").write_text(json.dumps(metrics, indent=2))
    reaper = asyncio.ensure_future(_reap_adopted(children_pids))
    try:
        await _start(children[0])
        assert children[0].proc is not None
        api = json.loads((data / "api.json").read_text())
        await _wait_api(api["url"], children[0].proc, ca=api.get("ca", ""))
        for child in children[1:]:
            await _start(child)
        _say(f"API      {api['url']}/api/docs")
        _say(f"apps at  http://APP.{settings.default_domain}:{settings.router_port}/")
        _say(f"git push ssh://{settings.bind_host}:{settings.ssh_port}/APP main")
        _say("running; Ctrl-C stops everything")
        if ready is not None:
            ready.set()
        while not stop.is_set():
            waits = {
                asyncio.ensure_future(c.proc.wait()): c for c in children if c.proc is not None
            }
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
            for fut in waits:
                fut.cancel()
            stopper.cancel()
            if stop.is_set():
                break
            for fut in done:
                exited = waits.get(fut)
                if exited is None:
                    continue
                child = exited
                now = time.monotonic()
                child.history = [t for t in child.history if now - t < 60] + [now]
                delay = restart_delay(len(child.history))
                _say(f"{child.role} exited with status {fut.result()}; restarting in {delay:.1f}s")
                try:
                    await aio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    await _start(child)
    finally:
        _say("stopping")
        reaper.cancel()
        for child in reversed(children):
            if child.proc is not None:
                await terminate(child.proc, STOP_GRACE_S)
        # Anything still below us (orphans adopted as subreaper, e.g. workers of
        # an instance whose runner was killed) goes too: nothing outlives `up`.
        stragglers = kill_descendants()
        if stragglers:
            _say(f"killed {len(stragglers)} leftover process(es): {', '.join(stragglers)}")
        _say("stopped")


@click.command("up")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="data directory (the same as roost --data DIR; default: $ROOST_DATA, "
    "else /var/lib/roost as root, ./.roost otherwise)",
)
@click.option("--router-port", type=int, default=None, help="HTTP port for apps (default 8080)")
@click.option("--api-port", type=int, default=None, help="controller API port (default 8000)")
@click.option("--ssh-port", type=int, default=None, help="SSH port of the gateway (default 2222)")
@click.option(
    "--tls-port", type=int, default=None, help="HTTPS port of the router (default 8443; 0: off)"
)
@click.pass_context
def up(
    ctx: click.Context,
    data_dir: Path | None,
    router_port: int | None,
    api_port: int | None,
    ssh_port: int | None,
    tls_port: int | None,
) -> None:
    """Run the whole platform on this machine until Ctrl-C."""
    data: Path = (data_dir or ctx.obj["data"]).resolve()
    settings = Settings.from_env(
        router_port=router_port, api_port=api_port, ssh_port=ssh_port, router_tls_port=tls_port
    )
    chosen = data_dir is not None or "ROOST_DATA" in os.environ
    chosen = chosen or ctx.find_root().get_parameter_source("data") != ParameterSource.DEFAULT
    older = None if chosen else older_local_dir(Path.cwd(), data)
    if older is not None:
        _say(f"the data of an earlier roost up are in {older}; this one uses {data}")
        _say(f"to keep using them: roost up --data {older} (and roost --data {older} ...)")
    unreachable = check_reachable(data)
    if unreachable is not None:
        raise CliError(unreachable)
    make_parents(data)
    try:
        lock = prepare_data_dir(data, settings)
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    try:
        _say(f"data directory {data}")
        hint = missing_hint()
        if hint:
            _say(f"no servicehost: {hint}")
            _say("apps can deploy, but not ones that ask for postgres or redis")
        asyncio.run(supervise(data, settings, with_services=hint is None))
    finally:
        lock.close()
