"""`roost cluster upgrade`: replace a cluster's hosts one at a time.

Run where the cluster's identities are (DATA/keys/peers.json, DATA/
cluster.json: any joined host's data directory) with the API's address and
an admin token (ROOST_API, ROOST_TOKEN, ROOST_API_CA, as every command).
First a platform backup (POST /api/backups, as `roost backups capture
--platform`): refused without a backupd unless --no-backup. Then, host by
host in upgradeplan.order: run --replace (a shell command, "{host}" and
"{roles}" filled in: how this site installs the new Roost and restarts a
host's units, e.g. `ssh {host} 'pip install -U roost && systemctl restart
roost.target'`; the units hand instances, PostgreSQL and Redis over to the
new daemons, see `roost install`), wait until the host is healthy on the
new release (upgradeplan.judge), then the next. The first host whose
command fails or that is not healthy by --health-timeout stops the
upgrade: the hosts after it keep the old release, and the command says
which host and why (exit 1).

A runner host whose runner cannot hand its instances over (0.1.0's, whose
heartbeat names no release; every runner host with --drain) is drained
first (POST /api/hosts/HOST/drain: each instance started elsewhere and
routed before it stops) until it holds no instance, then replaced, then
undrained; a drain that does not end by --drain-timeout is undone and
stops the upgrade, naming what had nowhere to go.

The adapters here only look (HTTP, TCP connects) and run the command;
every decision is in upgradeplan.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import httpx
from rich.console import Console

from roost import __version__
from roost.cli import upgradeplan as plan
from roost.cli.client import EXIT_USAGE, Api, CliError, resolve
from roost.cli.hosts import wait_drained
from roost.settings import Settings
from roost.wire.cluster import ClusterConfig
from roost.wire.identity import load_peers

console = Console()
LOOK_EVERY_S = 0.5
# Book roles whose endpoint says a host's daemon of that role accepts.
ROLE_ENDPOINT = {
    "builder": "builder",
    "servicehost": "servicehost",
    "backupd": "backupd",
    "gateway": "gateway",
}


class Cluster:
    """What the upgrader looks at: the controllers' APIs and the daemons' ports."""

    def __init__(self, data: Path, router_port: int) -> None:
        peers = load_peers(data / "keys")
        if not peers or not (data / "cluster.json").exists():
            raise CliError(
                f"{data} holds no cluster (keys/peers.json, cluster.json): pass --data of a "
                "joined host",
                EXIT_USAGE,
            )
        self.members = plan.members((who.role, who.host) for who in peers.values())
        config = ClusterConfig.load(data / "cluster.json")
        self.endpoints: dict[tuple[str, str], tuple[str, int]] = {}
        for book_role, eps in config.endpoints.items():
            for ep in eps:
                parts = urlsplit(ep.address.replace("tcp://", "http://", 1))
                if parts.hostname and parts.port:
                    self.endpoints[(book_role, parts.hostname)] = (parts.hostname, parts.port)
        self.router_port = router_port
        base = resolve(data)
        self.base = base
        # Every controller's API, at the address the configured one has
        # (scheme and port), so the upgrader rotates while one is replaced.
        parts = urlsplit(base.url)
        self.apis = {
            m.host: Api(
                urlunsplit((parts.scheme, _netloc(m.host, parts.port), "", "", "")),
                _token(base),
                base.ca,
            )
            for m in self.members
            if "controller" in m.roles
        }
        for api in self.apis.values():
            api.http.timeout = httpx.Timeout(5.0, read=120.0)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """The first controller that answers (the configured one first)."""
        last: CliError | None = None
        for api in [self.base, *self.apis.values()]:
            try:
                return api.request(method, path, **kw)
            except CliError as exc:
                if "cannot reach" not in str(exc):
                    raise
                last = exc
        assert last is not None
        raise last

    def health(self, host: str) -> dict[str, Any] | None:
        api = self.apis.get(host)
        if api is None:
            return None
        try:
            r = api.http.get("/api/health", timeout=2.0)
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    def hosts(self) -> list[dict[str, Any]]:
        """/api/hosts ([] when no controller answers)."""
        try:
            return list(self.request("GET", "/api/hosts"))
        except CliError:
            return []

    def lease_holder(self) -> str | None:
        for host in self.apis:
            h = self.health(host)
            if h is not None and h.get("leader"):
                return host
        return None

    def look(self, member: plan.Member) -> plan.Seen:
        now = time.monotonic()
        version = None
        if "controller" in member.roles:
            h = self.health(member.host)
            version = None if h is None else str(h.get("version", ""))
        runner = None
        if "runner" in member.roles:
            for row in self.hosts():
                if row.get("host_id") == member.host:
                    runner = plan.RunnerSeen(
                        state=str(row["state"]),
                        release=str(row.get("release", "")),
                        beat_at=now - float(row.get("seen_s_ago", 1e9)),
                    )
        accepting = {}
        for role in member.roles:
            if role == "router":
                accepting[role] = _accepts(member.host, self.router_port)
            elif role in ROLE_ENDPOINT:
                addr = self.endpoints.get((ROLE_ENDPOINT[role], member.host))
                accepting[role] = addr is not None and _accepts(*addr)
        return plan.Seen(controller_version=version, runner=runner, accepting=accepting)


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _token(api: Api) -> str:
    auth = api.http.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_healthy(
    cluster: Cluster, member: plan.Member, target: str, replaced_at: float, timeout_s: float
) -> plan.Verdict:
    deadline = time.monotonic() + timeout_s
    while True:
        verdict = plan.judge(
            member.roles, cluster.look(member), target, replaced_at, time.monotonic(), deadline
        )
        if verdict.state != "waiting":
            return verdict
        time.sleep(LOOK_EVERY_S)


def replace(command: str, member: plan.Member, timeout_s: float) -> str:
    """Run --replace for one host; "" when it succeeded, else why not."""
    line = command.format(host=member.host, roles=",".join(member.roles))
    try:
        r = subprocess.run(
            line, shell=True, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return f"its replacement command ran longer than {timeout_s:.0f} s: {line}"
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]
        return f"its replacement command failed ({r.returncode}): {line}: {' / '.join(tail)}"
    return ""


def runner_seen(cluster: Cluster, member: plan.Member, timeout_s: float) -> plan.RunnerSeen | None:
    """The host's runner as the controllers list it, once they do: a
    controller just replaced has not heard every runner yet. None when
    none lists it by `timeout_s` (then it runs nothing they placed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = cluster.look(member).runner
        if seen is not None or time.monotonic() >= deadline:
            return seen
        time.sleep(LOOK_EVERY_S)


def drain_first(cluster: Cluster, member: plan.Member, timeout_s: float, why: str) -> plan.Verdict:
    """Drain the host's runner and wait until it holds no instance (each
    moved make-before-break: controller/hostdrain.py)."""
    since = time.monotonic()
    r = cluster.request("POST", f"/api/hosts/{member.host}/drain")
    console.print(
        f"{member.host}: draining ({why}): its {r['instances']} instance(s) start elsewhere first"
    )
    return wait_drained(
        cluster.hosts,
        member.host,
        since,
        timeout_s,
        lambda why: console.print(f"{member.host}: draining: {why}"),
    )


def backup_first(cluster: Cluster, no_backup: bool) -> None:
    try:
        capture, said = plan.backup_step(cluster.request("GET", "/api/backups"), no_backup)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    console.print(said)
    if not capture:
        return
    entries = cluster.request("POST", "/api/backups", timeout=3600.0)["entries"]
    failed = [e for e in entries if e.get("state") == "failed"]
    if failed:
        raise CliError(
            "the platform backup failed, nothing was upgraded: "
            + "; ".join(f"{e['kind']}: {e.get('message', '')}" for e in failed)
        )
    for e in entries:
        console.print(f"  {e['kind']}: {e.get('id', '')} ({e['state']})")


@click.command("upgrade")
@click.option(
    "--replace",
    "command",
    required=True,
    help="shell command replacing one host's daemons with the new release's; "
    "{host} is its address, {roles} its roles (comma-separated)",
)
@click.option("--to", "target", default=__version__, show_default=True, help="the new release")
@click.option("--host", "only", multiple=True, help="only these hosts (repeatable), in plan order")
@click.option("--no-backup", is_flag=True, help="upgrade without a platform backup first")
@click.option("--health-timeout", type=float, default=180.0, show_default=True)
@click.option("--replace-timeout", type=float, default=600.0, show_default=True)
@click.option(
    "--router-port",
    type=int,
    default=None,
    help="the routers' HTTP port (default: ROOST_ROUTER_PORT's)",
)
@click.option(
    "--drain",
    "always_drain",
    is_flag=True,
    help="drain every runner host before its replacement (default: only runners of 0.1.0, "
    "which cannot hand their instances over)",
)
@click.option("--drain-timeout", type=float, default=300.0, show_default=True)
@click.option("--dry-run", is_flag=True, help="print the order and stop")
@click.pass_context
def upgrade(
    ctx: click.Context,
    command: str,
    target: str,
    only: tuple[str, ...],
    no_backup: bool,
    health_timeout: float,
    replace_timeout: float,
    router_port: int | None,
    always_drain: bool,
    drain_timeout: float,
    dry_run: bool,
) -> None:
    """Replace the cluster's hosts one at a time, after a backup; stop at the first unhealthy."""
    cluster = Cluster(ctx.obj["data"], router_port or Settings().router_port)
    try:
        ordered = plan.select(plan.order(cluster.members, cluster.lease_holder()), only)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    for n, m in enumerate(ordered, 1):
        console.print(f"{n}. {m.host}: {', '.join(m.roles)}")
    if dry_run:
        return
    backup_first(cluster, no_backup)
    for n, m in enumerate(ordered, 1):
        started = time.monotonic()
        rest = [x.host for x in ordered[n:]]
        left = f"; not replaced: {', '.join(rest)}" if rest else ""
        listed = cluster.hosts()
        warning = plan.servicehost_warning(m.roles, (str(h.get("release", "")) for h in listed))
        if warning:
            console.print(f"{m.host}: {warning}")
        seen = runner_seen(cluster, m, health_timeout) if "runner" in m.roles else None
        drained = plan.needs_drain(m.roles, seen.release if seen else None, always_drain)
        if drained:
            why = "--drain" if seen and seen.release else "its runner cannot hand them over"
            verdict = drain_first(cluster, m, drain_timeout, why)
            if verdict.state != "healthy":
                cluster.request("DELETE", f"/api/hosts/{m.host}/drain")
                raise CliError(f"stopped at {m.host}: not drained: {verdict.why}{left}")
        console.print(f"{m.host}: replacing ({', '.join(m.roles)})")
        why = replace(command, m, replace_timeout)
        verdict = (
            plan.Verdict("failed", why)
            if why
            else wait_healthy(cluster, m, target, time.monotonic(), health_timeout)
        )
        if verdict.state != "healthy":
            kept = "; it stays drained" if drained else ""
            raise CliError(f"stopped at {m.host}: {verdict.why}{kept}{left}")
        if drained:
            cluster.request("DELETE", f"/api/hosts/{m.host}/drain")
            console.print(f"{m.host}: undrained")
        console.print(f"{m.host}: healthy on {target} in {time.monotonic() - started:.1f} s")
    console.print(f"Upgraded {len(ordered)} hosts to {target}.")
