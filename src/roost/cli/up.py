"""`roost up`: the whole platform on this machine, one OS process per role.

Theory of operation: one `roost.proc.supervise.Supervisor` (gunicorn's
arbiter, in asyncio) owns the roles. Signals only ask it to stop. A role that
exits while we run is restarted after a backoff that grows with quick
successive exits, unless it exited with a configuration error
(`roost.proc.exits`): then every role is stopped and `roost up` exits with
that role's message, since starting it again would fail the same way. On
stop, roles are stopped in reverse start order, each with TERM, a grace
period, then KILL; every role also dies with us (PR_SET_PDEATHSIG) and we are
a subreaper, so nothing outlives `roost up`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
import httpx
from click.core import ParameterSource

from roost.backups.tools import missing_tools
from roost.cli import upstate
from roost.cli.client import CliError
from roost.cli.datadir import check_reachable, make_parents, older_local_dir
from roost.cli.local import AlreadyRunning, free_port, prepare_data_dir
from roost.cli.readiness import role_probes
from roost.controller.apitls import api_url
from roost.proc import spawn
from roost.proc.backoff import Backoff
from roost.proc.children import Child, Policy
from roost.proc.stop import kill_descendants
from roost.proc.supervise import Process, Program, Supervisor
from roost.proc.wait import become_subreaper, reap_adopted
from roost.servicehost.binaries import missing_hint
from roost.settings import Settings

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


def _say(msg: str) -> None:
    click.echo(f"roost up: {msg}", err=True)


def role_program(
    role: str,
    argv: list[str],
    env: dict[str, str],
    ready: Callable[[Process], Awaitable[None]] | None = None,
) -> Program:
    """A role's daemon; its stderr passes through us, so a fatal exit is
    reported with the role's own last words."""

    async def start() -> Process:
        return await spawn.start(argv, env=env, stderr=subprocess.PIPE)

    policy = ROLE_POLICY
    if ready is not None:
        timeout = API_READY_S if role == "controller" else ROLE_READY_S
        policy = dataclasses.replace(policy, ready_timeout_s=timeout)
    return Program(role, start, ready=ready, policy=policy)


def _api_answers(data: Path) -> Callable[[Process], Awaitable[None]]:
    """The controller's readiness: its API answers /api/health."""

    async def probe(proc: Process) -> None:
        api = json.loads((data / "api.json").read_text())
        ca = api.get("ca", "")
        verify = ssl.create_default_context(cafile=ca) if ca else True
        async with httpx.AsyncClient(verify=verify) as http:
            while True:
                try:
                    r = await http.get(f"{api['url']}/api/health", timeout=1.0)
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)

    return probe


async def _reap_adopted(known: Callable[[], set[int]]) -> None:
    while True:
        await asyncio.sleep(1.0)
        reap_adopted(known())


def fatal_error(child: Child) -> CliError:
    """`roost up` stops: a role exited with a configuration error (its message
    names the fix); restarting it would fail the same way."""
    why = f"{child.name} {upstate.last_words(child.last_error)}"
    code = child.status if child.status is not None and child.status > 0 else 1
    return CliError(f"{why}\nnot restarting it: fix that, then run roost up again", code)


def role_states(names: list[str], children: dict[str, Child]) -> dict[str, upstate.RoleStatus]:
    """Every role `roost up` runs, as its supervisor last saw it (pending until added)."""
    out = {}
    for name in names:
        c = children.get(name)
        out[name] = (
            upstate.RoleStatus(
                state=c.state, pid=c.pid, restarts=c.restarts, last_error=c.last_error
            )
            if c is not None
            else upstate.RoleStatus(state="pending")
        )
    return out


async def _report(
    data: Path, sup: Supervisor, names: list[str], ready: asyncio.Event | None
) -> None:
    """Keep DATA/up.json current; say "ready" each time every role has come up."""
    said = False
    last: upstate.UpStatus | None = None
    while True:
        roles = role_states(names, sup.children)
        all_up = all(r.state == "up" for r in roles.values())
        now = upstate.UpStatus(pid=os.getpid(), roles=roles, ready=all_up)
        if now != last:
            await asyncio.to_thread(upstate.save, data, now)
            last = now
        if all_up and not said:
            _say("ready: every role is up")
            if ready is not None:
                ready.set()
        said = all_up
        await asyncio.sleep(0.2)


async def supervise(
    data: Path,
    settings: Settings,
    with_services: bool,
    ready: asyncio.Event | None = None,
    with_backups: bool = False,
) -> None:
    sup = Supervisor(in_order=True, say=_say)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sup.stop)  # signals only enqueue
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
    programs: list[Program] = []
    # Each role is up once it serves (roost.cli.readiness); the platform is
    # ready, and says so, once every one is.
    from roost.runner.layout import Layout  # only `roost up` needs the runner's layout

    probes = role_probes(data, settings, Layout(data).host_id(settings.runner_host_id))
    for role, extra in (
        ("controller", ["--api-port", str(settings.api_port)]),
        ("builder", []),
        ("runner", []),
        ("router", ["--port", str(settings.router_port)]),
        ("gateway", ["--port", str(settings.ssh_port)]),
        *([("servicehost", [])] if with_services else []),
        *([("backupd", [])] if with_backups else []),
    ):
        child_env = dict(env)
        if role != "controller":
            port = free_port(settings.bind_host)
            child_env["ROOST_METRICS_PORT"] = str(port)
            metrics[role] = f"http://{settings.bind_host}:{port}/metrics"
        probe = _api_answers(data) if role == "controller" else probes.get(role)
        programs.append(role_program(role, [*base, role, *extra], child_env, probe))
    (data / "metrics.json").write_text(json.dumps(metrics, indent=2))
    try:
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(sup.run())
            reaper = tg.create_task(_reap_adopted(sup.pids))
            reporter = tg.create_task(_report(data, sup, [p.name for p in programs], ready))
            # The controller first: the others register with it as they start.
            sup.add(programs[0])
            if await sup.wait_up("controller", 2 * API_READY_S):
                for program in programs[1:]:
                    sup.add(program)
                api = json.loads((data / "api.json").read_text())
                _say(f"API      {api['url']}/api/docs")
                _say(f"apps at  http://APP.{settings.default_domain}:{settings.router_port}/")
                _say(f"git push ssh://{settings.bind_host}:{settings.ssh_port}/APP main")
                _say("running; Ctrl-C stops everything")
            elif sup.fatal is None:
                c = sup.children.get("controller")
                _say(f"the controller API did not come up ({c.last_error if c else 'not started'})")
                sup.stop()
            await supervising
            reaper.cancel()
            reporter.cancel()
    finally:
        # Anything still below us (orphans adopted as subreaper, e.g. workers of
        # an instance whose runner was killed) goes too: nothing outlives `up`.
        stragglers = kill_descendants()
        if stragglers:
            _say(f"killed {len(stragglers)} leftover process(es): {', '.join(stragglers)}")
        _say("stopped")
        fatal = sup.fatal
        # The last word for `roost status`: over, and what ended it.
        final = upstate.UpStatus(
            pid=os.getpid(),
            roles=role_states([p.name for p in programs], sup.children),
            over=True,
            error=fatal_error(fatal).message if fatal is not None else "",
        )
        upstate.save(data, final)
    if fatal is not None:
        raise fatal_error(fatal)


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
        missing = missing_tools()
        if missing:
            _say(f"no backupd: apt-get install {' '.join(missing)}")
            _say("nothing is backed up")
        asyncio.run(supervise(data, settings, with_services=hint is None, with_backups=not missing))
    finally:
        lock.close()
