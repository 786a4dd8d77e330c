"""`roost up`: the whole platform on this machine, one OS process per role,
or per group of roles (ROOST_ROLE_HOST, by default the controller, builder,
runner and servicehost share one: roost.cli.uphost, roost.cli.rolehost).

Theory of operation: one `roost.proc.supervise.Supervisor` (gunicorn's
arbiter, in asyncio) owns the roles. Signals only ask it to stop. A role that
exits while we run is restarted after a backoff that grows with quick
successive exits, unless it exited with a configuration error
(`roost.proc.exits`): then every role is stopped and `roost up` exits with
that role's message, since starting it again would fail the same way. A
role that exited because another process took a port we gave it (between
our choice and its bind) starts again on another, and the daemons that
read that address are replaced (`roost.cli.readdress`). On stop, roles are
stopped in reverse start order, each with TERM, a grace period, then KILL;
every role also dies with us (PR_SET_PDEATHSIG) and we are a subreaper, so
nothing outlives `roost up`: what a daemon left running for a successor (an
instance's shim, a PostgreSQL server) is ours then, and a full stop ends it
too, after the roles (which stop their tenants on TERM).

A restart is not a stop: SIGHUP (`roost up --reload`) replaces every daemon
one at a time and leaves the apps alone (`roost.cli.reload`). The router's
listening sockets are bound here, once, with a large backlog, and handed to
every router started (`roost.proc.activation`; the roles' programs are
roost.cli.roleprograms): while one router hands over to the next, or
restarts after a crash, connections wait in the kernel's backlog instead
of being refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import click
from click.core import ParameterSource

from roost import __version__
from roost.backups.tools import missing_tools
from roost.cli import control, readdress, reload, uphost
from roost.cli.client import CliError
from roost.cli.datadir import check_reachable, make_parents, older_local_dir
from roost.cli.local import (
    AlreadyRunning,
    free_port,
    prepare_cluster,
    prepare_data_dir,
    running_up,
    write_api_info,
)
from roost.cli.readiness import role_probes
from roost.cli.roleprograms import (
    api_answers,
    metrics_env,
    ready_timeout,
    role_program,
    router_ports,
    router_sockets,
)
from roost.cli.takeover import (
    Older,
    TakeOver,
    bring_up,
    hand_over,
    moved,
    new_host_id,
    older_up,
)
from roost.controller.apitls import api_url
from roost.daemonize import secure_start
from roost.proc import upstate
from roost.proc.children import Child
from roost.proc.forkserver import ForkServer
from roost.proc.stop import kill_descendants
from roost.proc.supervise import Program, Supervisor
from roost.proc.wait import become_subreaper, reap_adopted
from roost.servicehost.binaries import missing_hint
from roost.settings import Settings


def _say(msg: str) -> None:
    click.echo(f"roost up: {msg}", err=True)


async def _reap_adopted(known: Callable[[], set[int]], hold: Callable[[], bool]) -> None:
    while True:
        await asyncio.sleep(1.0)
        if not hold():  # a forked role may be ours already and not yet known
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
    data: Path,
    sup: Supervisor,
    names: list[str],
    ready: asyncio.Event | None,
    reloads: reload.Reloads,
    taking_over: Callable[[], bool] = lambda: False,
    groups: uphost.Groups | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Keep DATA/up.json current; say "ready" each time every role has come up
    (and not before a take-over has ended: the older roost up writes the
    file until it exits, so it is written again then), and call `on_ready`."""
    said = was_settled = False
    last: upstate.UpStatus | None = None
    was_taking_over = taking_over()
    while True:
        roles = uphost.expand_states(role_states(names, sup.children), groups or {})
        still = taking_over()
        all_up = all(r.state == "up" for r in roles.values()) and not still
        now = upstate.UpStatus(
            pid=os.getpid(),
            roles=roles,
            ready=all_up,
            reload=uphost.expand_reload(reloads.status, groups or {}),
            release=__version__,
        )
        if now != last or still != was_taking_over:
            await asyncio.to_thread(upstate.save, data, now)
            last, was_taking_over = now, still
        if all_up and not said:
            _say("ready: every role is up")
            if ready is not None:
                ready.set()
        reloading = reloads.status is not None and not reloads.status.finished_at
        # Up after a start, a restart or a reload (whose roles may never all
        # have been down at once): once each time.
        settled = all_up and not reloading
        if settled and not was_settled and on_ready is not None:
            await on_ready()
        said, was_settled = all_up, settled
        await asyncio.sleep(0.2)


async def supervise(
    data: Path,
    settings: Settings,
    with_services: bool,
    ready: asyncio.Event | None = None,
    with_backups: bool = False,
    takeover: TakeOver | None = None,
) -> None:
    sup = Supervisor(in_order=True, say=_say)
    reloads = reload.Reloads()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sup.stop)  # signals only enqueue
    loop.add_signal_handler(signal.SIGHUP, reloads.ask)
    become_subreaper()
    # Taking over from an older roost up (roost.cli.takeover): its router's sockets.
    older = None
    if takeover is not None:
        older = Older(takeover.pid, data, _say, takeover.hands_over)
        try:
            older.freeze()
            take = older.held_listeners if takeover.hands_over else older.listeners
            sockets = take(settings.bind_host, router_ports(settings))
        except BaseException as exc:
            older.resume()  # it carries on as it was
            if isinstance(exc, OSError):
                raise CliError(f"cannot take the router's ports over: {exc}") from None
            raise
    else:
        sockets = router_sockets(settings)
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
    # The roles forked from one zygote, sharing what they all import (issue 21).
    forks = ForkServer(["--data", str(data)]) if settings.fork_roles == "on" else None
    # Each role is up once it serves (roost.cli.readiness); the platform is
    # ready, and says so, once every one is.
    from roost.runner.layout import Layout  # only `roost up` needs the runner's layout

    probes = role_probes(data, settings, Layout(data).host_id(settings.runner_host_id))
    # Which roles share a process (issue 21; roost.cli.uphost).
    groups: uphost.Groups = {}
    moves = readdress.Readdress(data, settings.bind_host, metrics, groups, _say)

    def before(name: str) -> Callable[[], None]:
        return lambda: moves.before_start(name, sup.children.get(name))

    for role, extra in (
        ("controller", ["--api-port", str(settings.api_port)]),
        ("builder", []),
        ("runner", []),
        ("router", ["--port", str(settings.router_port)]),
        ("gateway", ["--port", str(settings.ssh_port)]),
        *([("servicehost", [])] if with_services else []),
        *([("backupd", [])] if with_backups else []),
    ):
        probe = api_answers(data) if role == "controller" else probes.get(role)
        argv = [*base, role, *extra]
        if role == "controller":
            programs.append(role_program(role, argv, env, probe, forks=forks, before=before(role)))
            continue
        port = free_port(settings.bind_host, held=True)  # until the role starts
        metrics[role] = f"http://{settings.bind_host}:{port}/metrics"
        overlaps = role == "router"
        at_start = metrics_env(env, role, metrics, data, settings.bind_host, overlaps)
        shared = sockets if role == "router" else ()
        programs.append(role_program(role, argv, at_start, probe, shared, forks, before(role)))
    # Several roles in one process.
    groups.update(
        uphost.groups_of([p.name for p in programs], uphost.parse_groups(settings.role_host))
    )
    if groups:

        def host_argv(members: list[str]) -> Callable[[], list[str]]:
            return lambda: [*base, "roles", *uphost.specs(members, metrics)]

        hosts = {
            name: role_program(
                name,
                host_argv(members),
                dict(env),
                uphost.all_of(
                    [api_answers(data) if r == "controller" else probes[r] for r in members]
                ),
                forks=forks,
                before=before(name),
            )
            for name, members in groups.items()
        }
        programs = uphost.fold(programs, hosts, groups)
    (data / "metrics.json").write_text(json.dumps(metrics, indent=2))
    names = [p.name for p in programs]
    steps = uphost.host_steps(reload.plan(names, shared_sockets=bool(sockets)), groups)
    try:
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(sup.run())
            known = sup.pids if forks is None else (lambda: sup.pids() | forks.pids())
            hold = (lambda: False) if forks is None else (lambda: forks.busy)
            reaper = tg.create_task(_reap_adopted(known, hold))
            # The daemons that read an address moved (roost.cli.readdress) are replaced.
            mover = tg.create_task(moves.run(sup, steps, ready_timeout))
            reporter = tg.create_task(
                _report(
                    data,
                    sup,
                    names,
                    ready,
                    reloads,
                    lambda: bool(older and not older.ended),
                    groups,
                    # Every role is up: its zygote retires now rather than
                    # after its idle time (issue 21); a restart starts another.
                    forks.renew if forks is not None and forks.detach else None,
                )
            )
            reloader = None
            rest = programs[1:]
            # The controller first: the others register with it as they start.
            if older is not None and takeover is not None and groups:
                # A host binds all its members' ports: their older daemons go first.
                members = uphost.members_of(groups)
                for role, how in uphost.older_retirements(members, takeover.hands_over):
                    await older.retire(role, how)
            elif older is not None:
                await older.retire("controller")
            sup.add(programs[0])
            first = programs[0].name
            up = await sup.wait_up(first, 2 * ready_timeout(first))
            if up and older is not None and takeover is not None and groups:
                for program in [p for p in rest if p.name in groups]:
                    sup.add(program)
                    up = up and await sup.wait_up(program.name, ready_timeout(program.name))
                rest = [p for p in rest if p.name not in groups]
                if up and not takeover.hands_over and "runner" in uphost.members_of(groups):
                    await moved(data, *takeover.hosts, _say)  # onto the new runner first
                if not up:
                    _say("the take-over stopped: a new process of several roles did not come up")
                    sup.stop()
            if up:
                if older is None or takeover is None:
                    for program in rest:
                        sup.add(program)
                elif takeover.hands_over:
                    if not await hand_over(sup, rest, older, ready_timeout):
                        sup.stop()
                elif not await bring_up(sup, rest, older, data, takeover.hosts, ready_timeout):
                    sup.stop()
                api = json.loads((data / "api.json").read_text())
                _say(f"API      {api['url']}/api/docs")
                _say(f"apps at  http://APP.{settings.default_domain}:{settings.router_port}/")
                _say(f"git push ssh://{settings.bind_host}:{settings.ssh_port}/APP main")
                _say("running; Ctrl-C stops everything, roost up --reload restarts the daemons")
                renew = forks.renew if forks is not None else None
                reloader = tg.create_task(
                    reloads.run(sup, steps, ready_timeout, _say, before=renew)
                )
            elif sup.fatal is None and not sup.stopping:
                c = sup.children.get(first)
                _say(f"the controller API did not come up ({c.last_error if c else 'not started'})")
                sup.stop()
            await supervising
            if forks is not None:
                await forks.stop()  # every role has stopped: the zygotes go too
            reaper.cancel()
            mover.cancel()
            reporter.cancel()
            if reloader is not None:
                reloader.cancel()
    finally:
        if older is not None and not older.ended:
            older.resume()
        for _, sock in sockets:
            sock.close()
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
            roles=uphost.expand_states(
                role_states([p.name for p in programs], sup.children), groups
            ),
            over=True,
            error=fatal_error(fatal).message if fatal is not None else "",
            reload=uphost.expand_reload(reloads.status, groups),
            release=__version__,
        )
        upstate.save(data, final)
        if older is not None and older.lock is not None:
            older.lock.close()  # the lock a take-over took, held to the end as roost up's own
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
@click.option(
    "--reload",
    "reload_",
    is_flag=True,
    help="replace the daemons of the roost up running on the data directory, one at a "
    "time (apps keep serving), and report; starts nothing else",
)
@click.pass_context
def up(
    ctx: click.Context,
    data_dir: Path | None,
    router_port: int | None,
    api_port: int | None,
    ssh_port: int | None,
    tls_port: int | None,
    reload_: bool,
) -> None:
    """Run the whole platform on this machine until Ctrl-C (or roost down).

    SIGHUP, or roost up --reload, restarts Roost's own daemons one at a time
    (a new version's, after an upgrade) and leaves the apps running.
    """
    data: Path = (data_dir or ctx.obj["data"]).resolve()
    if reload_:
        control.reload_up(data)
        return
    settings = Settings.from_env(
        router_port=router_port, api_port=api_port, ssh_port=ssh_port, router_tls_port=tls_port
    )
    if settings.fork_roles not in ("on", "off"):
        raise CliError(f"ROOST_FORK_ROLES must be 'on' or 'off', not {settings.fork_roles!r}")
    try:
        uphost.parse_groups(settings.role_host)
    except ValueError as exc:
        raise CliError(str(exc)) from None
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
    takeover = None
    lock: IO[str] | None = None
    try:
        lock = prepare_data_dir(data, settings)
    except AlreadyRunning as exc:
        takeover = take_over(data, settings, exc)
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
        asyncio.run(
            supervise(data, settings, hint is None, with_backups=not missing, takeover=takeover)
        )
    finally:
        if lock is not None:
            lock.close()


def take_over(data: Path, settings: Settings, running: AlreadyRunning) -> TakeOver:
    """Prepare to take over from the `roost up` running on `data` if it is
    older (roost.cli.takeover), else refuse as `running` says."""
    found = older_up(data, running_up(data))
    if found is None:
        raise CliError(str(running)) from None
    pid, kind = found
    if kind == "hand-over":
        loaded = upstate.load(data)
        release = loaded[0].release if loaded is not None else "?"
        _say(f"roost up {release} (pid {pid}) runs on {data}: taking over, its daemons handing "
             f"the apps over")  # fmt: skip
        secure_start(data)
        from roost.runner.layout import Layout  # only `roost up` needs the runner's layout

        host = Layout(data).host_id(settings.runner_host_id)
        # The same addresses: the older daemons not yet replaced keep
        # reaching their successors (the runner its controller's).
        prepare_cluster(data, settings.bind_host, host, keep_ports=True, held=True)
        write_api_info(data, settings)
        return TakeOver(pid, (host, host), hands_over=True)
    if settings.runner_host_id:
        raise CliError(
            f"an older roost up (pid {pid}) runs on {data}, and ROOST_RUNNER_HOST_ID fixes the "
            f"runner's host id, so its apps cannot move to a new runner: stop it "
            f"(roost --data {data} down), then start this one"
        )
    _say(f"an older roost up (pid {pid}) runs on {data}: taking over, the apps serving on")
    secure_start(data)
    hosts = new_host_id(data)
    prepare_cluster(data, settings.bind_host, hosts[1], held=True)
    write_api_info(data, settings)
    return TakeOver(pid, hosts)
