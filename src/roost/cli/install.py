"""`roost install`: systemd units for the roles one host runs.

Theory of operation. Each role is a service of its own (`roost-ROLE.service`,
`roost --data DATA ROLE`), all parts of `roost.target`, restarted by systemd
whenever they exit (`Restart=always`) except with a fatal status
(`roost.proc.exits.FATAL`: fixing the configuration is the way out, as with
`roost up`). What makes a restart of Roost leave the apps serving:

- runner and servicehost stop with SIGUSR2, "hand over" (their tenants,
  instances or PostgreSQL and Redis, keep running; the successor adopts
  them), and `KillMode=process`, so systemd signals only the daemon itself
  and leaves the rest of its control group alone. A full stop of the apps is
  `roost down`, never a systemctl stop.
- the router's listening sockets belong to `roost-router.socket` (and
  `roost-router-tls.socket`), named "http" and "https" for the router
  (`roost.proc.activation`): they stay open while the router restarts, so
  connections wait in the backlog instead of being refused. The router
  drains on its stop signal; `KillMode=mixed` lets it stop its own workers.
- every other role holds no tenant: `KillMode=mixed` (the daemon stops its
  children itself; whatever is left is killed after it).
- `roost sentinel` (a controller host's Redis Sentinel, the third each Redis
  pair needs) is not a CURVE role but gets a unit of its own where the
  host's bundle holds the sentinel password and no servicehost runs one:
  it hands over too (its redis-sentinel is detached and adopted), so a
  restart keeps the sentinel's quorum.

Ordering: the controller first (the others register with it), the
servicehost before the runner (instances connect to their databases), the
router after its sockets; all after the network is up. Settings come from an
EnvironmentFile (`/etc/roost/roost.env`, made once with the ports, never
overwritten). `units` is pure: the unit files as data, tested without
systemd; `systemd-analyze verify` checks their text in tests/cli.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from roost.cli.client import EXIT_USAGE, CliError
from roost.cli.reload import HANDS_OVER  # the roles whose tenants outlive them on SIGUSR2
from roost.proc.exits import FATAL
from roost.settings import Settings
from roost.wire.cluster import ClusterConfig
from roost.wire.identity import ROLES

DEFAULT_DIR = Path("/etc/systemd/system")
DEFAULT_ENV_FILE = Path("/etc/roost/roost.env")
TARGET = "roost.target"
# The name `roost up` gives its one-host address book (roost.cli.local).
LOCAL_CLUSTER = "local"
# Roles that make cgroups for their tenants under their own.
MAKES_CGROUPS = frozenset({"runner", "builder"})
# What each role starts after, when this host runs it too.
AFTER: dict[str, tuple[str, ...]] = {
    "controller": (),
    "servicehost": ("controller",),
    "builder": ("controller",),
    "runner": ("controller", "servicehost", "builder"),
    "router": ("controller", "runner"),
    "gateway": ("controller", "builder"),
    "backupd": ("controller", "servicehost"),
    "sentinel": (),
}
# Daemons with a unit that are not CURVE roles (no key of their own).
PARTS = ("sentinel",)
# What a sentinel-only host holds: the Redis pairs' sentinel password.
SENTINEL_KEY_FILE = "keys/sentinel.key"
# Parts that, like the runner and servicehost, leave their servers to a
# successor on SIGUSR2 (roost.servicehost.handover).
PARTS_HANDING_OVER = frozenset({"sentinel"})
WHAT = {
    "controller": "API, scheduler and state",
    "builder": "builds images from uploads",
    "runner": "supervises this host's app instances",
    "router": "HTTP front end",
    "servicehost": "PostgreSQL and Redis for the apps",
    "gateway": "SSH for git push, run, rsync and scp",
    "backupd": "pulls backups and proves them",
    "sentinel": "Redis Sentinel, the third beside the servicehosts' two",
}
# A hand-over is prompt; the router drains (ROOST_ROUTER_DRAIN_S) first.
STOP_TIMEOUT_S = {"router": 60, "controller": 30}
DEFAULT_STOP_TIMEOUT_S = 30

Cmd = TypeVar("Cmd", bound=Callable[..., Any])


@dataclass(frozen=True)
class Unit:
    """One unit file: its name and its sections' (key, value) lines, in order."""

    name: str
    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, section: str, key: str) -> str | None:
        found = self.values(section, key)
        return found[-1] if found else None

    def render(self) -> str:
        out = ["# Written by `roost install`; `roost install` again rewrites it."]
        for name, lines in self.sections.items():
            out += ["", f"[{name}]", *(f"{k}={v}" for k, v in lines)]
        return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Plan:
    """What one host's units are made of."""

    roles: tuple[str, ...]
    data: Path
    roost: tuple[str, ...]  # the command that is `roost` (absolute path first)
    env_file: Path = DEFAULT_ENV_FILE
    http_port: int = 8080
    tls_port: int = 8443  # 0: no TLS socket
    host: str = "127.0.0.1"  # where the router listens: ROOST_BIND_HOST, as under roost up


def service_name(role: str) -> str:
    return f"roost-{role}.service"


def socket_names(plan: Plan) -> list[str]:
    """The router's socket units (none without a router)."""
    if "router" not in plan.roles:
        return []
    return ["roost-router.socket", *(["roost-router-tls.socket"] if plan.tls_port else [])]


# Characters a path in a unit file would need quoted or escaped (systemd
# splits on spaces and expands $ and % specifiers): refused instead.
_UNSAFE = frozenset(" \t\n\"'\\$%;")


def _plain(path: str, what: str) -> str:
    if not path.startswith("/") or any(c in _UNSAFE for c in path):
        raise ValueError(f"{what} {path!r} must be an absolute path without spaces, quotes, $ or %")
    return path


def service(plan: Plan, role: str) -> Unit:
    after = ["network-online.target"]
    after += [service_name(r) for r in AFTER[role] if r in plan.roles]
    unit: list[tuple[str, str]] = [
        ("Description", f"Roost {role}: {WHAT[role]}"),
        ("Wants", "network-online.target"),
        ("After", " ".join(after)),
        ("PartOf", TARGET),
    ]
    if role == "controller":
        # A local PostgreSQL holding the state database, when there is one.
        unit.append(("After", "postgresql.service"))
    if role == "router":
        sockets = " ".join(socket_names(plan))
        unit += [("Requires", sockets), ("After", sockets)]
    argv = [*plan.roost, "--data", str(plan.data), role]
    svc: list[tuple[str, str]] = [
        ("Type", "simple"),
        ("ExecStart", " ".join(argv)),
        ("EnvironmentFile", f"-{plan.env_file}"),
        # Logs reach the journal as they are written.
        ("Environment", "PYTHONUNBUFFERED=1"),
        ("Restart", "always"),
        ("RestartSec", "1"),
        ("RestartPreventExitStatus", " ".join(str(int(c)) for c in sorted(FATAL))),
        ("TimeoutStopSec", str(STOP_TIMEOUT_S.get(role, DEFAULT_STOP_TIMEOUT_S))),
        ("LimitNOFILE", "65536"),
    ]
    if role in HANDS_OVER or role in PARTS_HANDING_OVER:
        # Stop = hand over: only the daemon gets the signal, its tenants stay.
        svc += [
            ("KillMode", "process"),
            ("KillSignal", "SIGUSR2"),
            ("SuccessExitStatus", "SIGUSR2"),
        ]
    else:
        svc += [("KillMode", "mixed"), ("KillSignal", "SIGTERM")]
    if role in MAKES_CGROUPS:
        svc.append(("Delegate", "yes"))
    if role == "router":
        svc.append(("Sockets", " ".join(socket_names(plan))))
    return Unit(
        service_name(role),
        {"Unit": unit, "Service": svc, "Install": [("WantedBy", TARGET)]},
    )


def router_socket(plan: Plan, name: str, port: int, fd_name: str) -> Unit:
    host = f"[{plan.host}]" if ":" in plan.host else plan.host
    return Unit(
        name,
        {
            "Unit": [
                ("Description", f"Roost router: the {fd_name} listening socket"),
                # Not part of roost.target: stopping Roost keeps the port
                # open, so connections wait for the next router.
            ],
            "Socket": [
                ("ListenStream", f"{host}:{port}"),
                ("FileDescriptorName", fd_name),
                ("Service", service_name("router")),
                ("Backlog", "4096"),
                ("NoDelay", "true"),
                # Joins the port's SO_REUSEPORT group when a router that
                # bound it itself still runs (0.1.0's, several workers), so
                # an upgrade starts this socket and its router before that
                # one stops (docs/architecture.md, "Versions and rolling
                # upgrades"). Only root's sockets can join root's group.
                ("ReusePort", "true"),
            ],
            "Install": [("WantedBy", "sockets.target")],
        },
    )


def units(plan: Plan) -> list[Unit]:
    """Every unit file for `plan`: the target, a service per role, the router's sockets."""
    unknown = [r for r in plan.roles if r not in (*ROLES, *PARTS)]
    if unknown or not plan.roles:
        raise ValueError(f"unknown roles {unknown} (roles: {', '.join((*ROLES, *PARTS))})")
    _plain(str(plan.data), "the data directory")
    _plain(str(plan.env_file), "the environment file")
    command, *args = plan.roost
    _plain(command, "the roost command")
    if any(c in _UNSAFE for c in "".join(args)):
        raise ValueError(f"the roost command's arguments {args} need quoting")
    roles = [r for r in (*ROLES, *PARTS) if r in plan.roles]  # one order, whatever was asked
    out = [
        Unit(
            TARGET,
            {
                "Unit": [
                    ("Description", f"Roost: {', '.join(roles)}"),
                    ("Wants", " ".join(service_name(r) for r in roles)),
                    ("After", "network-online.target"),
                ],
                "Install": [("WantedBy", "multi-user.target")],
            },
        )
    ]
    out += [service(plan, r) for r in roles]
    if "router" in roles:
        out.append(router_socket(plan, "roost-router.socket", plan.http_port, "http"))
        if plan.tls_port:
            out.append(router_socket(plan, "roost-router-tls.socket", plan.tls_port, "https"))
    return out


def env_file_text(settings: Settings) -> str:
    """The settings every role of the host must agree on (as `roost up` passes them)."""
    lines = [
        "# Roost's settings for this host's daemons (roost install wrote it once;",
        "# edit freely, then systemctl restart roost.target). Every setting:",
        "# ROOST_* environment variables, listed in the manual's settings page.",
        f"ROOST_BIND_HOST={settings.bind_host}",
        f"ROOST_API_PORT={settings.api_port}",
        f"ROOST_ROUTER_PORT={settings.router_port}",
        f"ROOST_ROUTER_TLS_PORT={settings.router_tls_port}",
        f"ROOST_SSH_PORT={settings.ssh_port}",
    ]
    return "\n".join(lines) + "\n"


def roost_command() -> tuple[str, ...]:
    """This installation's `roost`: the script beside the interpreter, else `python -m roost`."""
    script = Path(sys.executable).with_name("roost")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-m", "roost")


def write_units(plan: Plan, directory: Path, settings: Settings) -> list[Path]:
    """Write `plan`'s units into `directory` (replacing Roost's own), and the
    environment file when there is none yet. Returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in units(plan):
        path = directory / unit.name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(unit.render())
        tmp.chmod(0o644)
        os.replace(tmp, path)
        written.append(path)
    if not plan.env_file.exists():
        plan.env_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(plan.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(env_file_text(settings))
        written.append(plan.env_file)
    return written


def host_roles(data: Path) -> list[str]:
    """The roles whose secret keys this host holds (what `cluster join` or
    `roost up` left in DATA/keys), in the usual order; and `sentinel` where
    the sentinel password is there but no servicehost (which runs its own)."""
    keys = data / "keys"
    roles = [r for r in ROLES if (keys / f"{r}.key_secret").is_file()]
    if (data / SENTINEL_KEY_FILE).is_file() and "servicehost" not in roles:
        roles.append("sentinel")
    return roles


def one_host_roles() -> list[str]:
    """What `roost up` runs here: the servicehost and backupd only when their
    tools are installed."""
    from roost.backups.tools import missing_tools
    from roost.servicehost.binaries import missing_hint

    roles = ["controller", "builder", "runner", "router", "gateway"]
    if missing_hint() is None:
        roles.append("servicehost")
    if not missing_tools():
        roles.append("backupd")
    return roles


def parse_roles(value: str) -> list[str]:
    roles = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in roles if r not in (*ROLES, *PARTS)]
    if unknown or not roles:
        raise CliError(
            f"--roles: unknown role(s) {', '.join(unknown) or '(none given)'}; "
            f"roles: {', '.join((*ROLES, *PARTS))}",
            EXIT_USAGE,
        )
    return roles


def install_units(
    data: Path, roles: list[str], directory: Path, env_file: Path
) -> tuple[Plan, list[Path]]:
    settings = Settings.from_env()
    plan = Plan(
        roles=tuple(roles),
        data=data.resolve(),
        roost=roost_command(),
        env_file=env_file,
        http_port=settings.router_port,
        tls_port=settings.router_tls_port,
        host=settings.bind_host,
    )
    try:
        return plan, write_units(plan, directory, settings)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def next_steps(plan: Plan, directory: Path) -> list[str]:
    enable = [TARGET, *socket_names(plan)]
    lines = []
    if directory != DEFAULT_DIR:
        lines.append(f"(written in {directory}; systemd reads {DEFAULT_DIR})")
    lines += [
        "systemctl daemon-reload",
        f"systemctl enable --now {' '.join(enable)}",
        "systemctl restart roost.target   # restarts Roost; the apps keep serving",
    ]
    return lines


def dir_option(*decls: str, help: str) -> Callable[[Cmd], Cmd]:
    """Where the units go (`roost install --dir`, `cluster join --systemd-dir`)."""
    where = click.Path(file_okay=False, path_type=Path)
    return click.option(*decls, type=where, default=DEFAULT_DIR, show_default=True, help=help)


def env_file_option(help: str) -> Callable[[Cmd], Cmd]:
    """The settings file the units read."""
    what = click.Path(dir_okay=False, path_type=Path)
    return click.option(
        "--env-file", type=what, default=DEFAULT_ENV_FILE, show_default=True, help=help
    )


@click.command("install")
@dir_option("--dir", "directory", help="where to write the unit files")
@click.option(
    "--roles",
    default="",
    help="roles to install, comma-separated (default: those whose keys are in DATA/keys; "
    "on a fresh data directory, what roost up runs)",
)
@env_file_option("settings file the units read (made with the ports if absent, never overwritten)")
@click.pass_context
def install(ctx: click.Context, directory: Path, roles: str, env_file: Path) -> None:
    """Write systemd units for this host's roles (roost.target, one service per role).

    Restarting a unit (an upgrade, a crash) leaves the apps serving: the
    runner and servicehost hand their instances and databases over to the
    next daemon, and the router's sockets stay open in roost-router.socket.
    """
    data: Path = ctx.obj["data"].resolve()
    if roles:
        chosen = parse_roles(roles)
    elif (data / "cluster.json").exists():
        local = ClusterConfig.load(data / "cluster.json").name == LOCAL_CLUSTER
        # A cluster host runs what its bundle gave it keys for.
        chosen = one_host_roles() if local else host_roles(data)
    else:
        # A fresh one-host platform: its keys and address book, as roost up
        # makes them (only now: on a used directory they may be in use).
        from roost.cli.local import prepare_cluster, write_api_info
        from roost.daemonize import secure_start

        settings = Settings.from_env()
        secure_start(data)
        prepare_cluster(data, settings.bind_host, settings.runner_host_id)
        write_api_info(data, settings)
        chosen = one_host_roles()
    if not chosen:
        raise CliError(f"{data} holds no role's keys: pass --roles", EXIT_USAGE)
    plan, written = install_units(data, chosen, directory, env_file)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"roles: {', '.join(plan.roles)}; then:")
    for line in next_steps(plan, directory):
        click.echo(f"  {line}")
