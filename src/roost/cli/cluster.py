"""`roost cluster init` and `roost cluster join`: many hosts, one cluster.

init makes a CURVE keypair for every (host, role) named on its command line
and writes one bundle per host (OUT/HOST.tar.gz, secret): the address book,
every member's public key and identity (keys/peers.json), that host's own
secret keys and nothing of any other host's, and, for controllers only, the
state database's secrets key (keys/fernet.key). With --state-hosts, the
state database is a Patroni cluster (roost.statedb): each etcd or Patroni
host's bundle also holds its statedb.json (passwords only where Patroni
runs), and cluster.json's state URL names both PostgreSQL members. join
unpacks a host's bundle into its data directory. ZAP admits only the
listed keys, each as its role on its host, and every request is checked
against what that role may send (`roost.wire.authz`): a runner's key
cannot provision a database, nor a machine without a bundle talk to any
daemon.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
from pathlib import Path

import click
import msgspec
from rich.console import Console

from roost.cli import clusterdata, clusterupgrade, install
from roost.cli.client import EXIT_USAGE, CliError
from roost.controller.admintoken import admin_token_path, read_admin_token
from roost.controller.secretbox import FERNET_FILE, legacy_key, new_key
from roost.servicehost import pgpair
from roost.servicehost.redispairs import SENTINEL_KEY as SENTINEL_FILE
from roost.statedb.plan import (
    STATE_FILE,
    PlanError,
    StateDbPlan,
    etcd_plan,
    for_host,
    hosts_of,
    new_plan,
)
from roost.statedb.plan import state_url as statedb_url
from roost.wire.cluster import ClusterConfig, Endpoint, PairEntry
from roost.wire.identity import (
    PEERS_FILE,
    ROLES,
    Identity,
    PeerError,
    encode_peers,
    identity,
    parse_peers,
)
from roost.wire.keys import KeyPair, generate_keypair

console = Console()

# address-book role -> (the daemon role whose key serves it, default port)
ENDPOINT_ROLES = {
    "controller": ("controller", 7100),
    "controller-pub": ("controller", 7101),
    "builder": ("builder", 7110),
    "images": ("builder", 7111),
    "servicehost": ("servicehost", 7120),
    "gateway": ("gateway", 7140),
    "backupd": ("backupd", 7130),
}


def _addresses(value: str, what: str) -> list[str]:
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    for h in hosts:
        if any(c in h for c in " /:") and not h.startswith("["):
            raise CliError(
                f"--{what}: expected IP addresses separated by commas, got {h!r}", EXIT_USAGE
            )
        try:
            identity("controller", h)
        except PeerError:
            raise CliError(f"--{what}: {h!r} is not a host address", EXIT_USAGE) from None
    return hosts


def build_config(
    name: str,
    members: dict[Identity, KeyPair],
    state_url: str,
    pairs: list[pgpair.PairPlan] | None = None,
    state_rest_port: int = 0,
) -> ClusterConfig:
    """The address book: every served role's endpoints, each with its host's
    key; the servicehost pairs (no secrets: those are in pgpair.json); the
    state database's Patroni REST port when it is Patroni's (else 0)."""
    endpoints: dict[str, list[Endpoint]] = {}
    for book_role, (role, port) in ENDPOINT_ROLES.items():
        eps = [
            Endpoint(f"tcp://{who.host}:{port}", pair.public_text)
            for who, pair in members.items()
            if who.role == role
        ]
        if eps:
            endpoints[book_role] = eps
    entries = [
        PairEntry(
            name=p.name,
            hosts=list(p.hosts),
            pg_port=p.pg_port,
            rest_port=p.rest_port,
            proxy_port=p.proxy_port,
        )
        for p in pairs or []
    ]
    return ClusterConfig(
        name=name,
        endpoints=endpoints,
        state_url=state_url,
        pairs=entries,
        state_rest_port=state_rest_port,
    )


def plan_hosts(roles: dict[str, list[str]]) -> dict[str, list[str]]:
    """host -> the roles it runs, hosts in the order first named."""
    hosts: dict[str, list[str]] = {}
    for role in ROLES:
        for h in roles.get(role, []):
            hosts.setdefault(h, [])
            if role not in hosts[h]:
                hosts[h].append(role)
    return hosts


def host_bundles(
    name: str,
    hosts: dict[str, list[str]],
    state_url: str,
    fernet_keys: list[bytes],
    statedb: StateDbPlan | None = None,
    sentinel_password: str = "",
    pairs: list[pgpair.PairPlan] | None = None,
) -> dict[str, dict[str, bytes]]:
    """host -> {path in its bundle: content}; a host's secrets are in its bundle only.

    `sentinel_password`: the Redis pairs' (servicehosts come in pairs): every
    servicehost and controller host runs a sentinel (roost.servicehost.sentineld).
    `pairs`: each pair's servicehosts get its plan (pgpair.json, with the
    pair's passwords) and run their member of its Patroni cluster."""
    members = {identity(r, h): generate_keypair() for h, roles in hosts.items() for r in roles}
    rest_port = statedb.rest_port if statedb is not None and statedb.patroni else 0
    book = build_config(name, members, state_url, pairs, rest_port)
    config = msgspec.json.format(msgspec.json.encode(book))
    peers = encode_peers({pair.public: who for who, pair in members.items()})
    out: dict[str, dict[str, bytes]] = {}
    for host, roles in hosts.items():
        files = {"cluster.json": config, f"keys/{PEERS_FILE}": peers}
        for role in roles:
            pair = members[identity(role, host)]
            files[f"keys/{role}.key"] = pair.public + b"\n"
            files[f"keys/{role}.key_secret"] = pair.public + b"\n" + pair.secret + b"\n"
        if "controller" in roles:
            files[f"keys/{FERNET_FILE}"] = b"".join(k + b"\n" for k in fernet_keys)
        if sentinel_password and {"servicehost", "controller"} & set(roles):
            files[f"keys/{SENTINEL_FILE}"] = sentinel_password.encode() + b"\n"
        out[host] = files
    for plan in pairs or []:
        for host in plan.hosts:
            mine = msgspec.json.format(msgspec.json.encode(pgpair.for_host(plan, host)))
            out[host][pgpair.PAIR_FILE] = mine
    if statedb is not None:
        for host in hosts_of(statedb):
            files = out.setdefault(host, {"cluster.json": config, f"keys/{PEERS_FILE}": peers})
            files[STATE_FILE] = msgspec.json.format(msgspec.json.encode(for_host(statedb, host)))
    return out


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, content in files.items():
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(content), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _legacy_secret(path: Path) -> bytes:
    """The CURVE secret an older cluster's controllers sealed secrets with:
    from its bundle (keys/cluster.key_secret) or that key file itself."""
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, mode="r:gz") as tar:
                fh = tar.extractfile("keys/cluster.key_secret")
                data = fh.read() if fh is not None else b""
        else:
            data = path.read_bytes()
    except (tarfile.TarError, OSError, KeyError) as exc:
        raise CliError(f"cannot read the old cluster key from {path}: {exc}", EXIT_USAGE) from None
    lines = data.split()
    if len(lines) != 2 or any(len(x) != 40 for x in lines):
        raise CliError(f"{path} holds no CURVE secret key", EXIT_USAGE)
    return lines[1]


@click.group("cluster")
def cluster() -> None:
    """Create a cluster's host bundles, or join a host to a cluster."""


@cluster.command("init")
@click.option("--name", default="roost", show_default=True)
@click.option("--controllers", required=True, help="controller host addresses, comma-separated")
@click.option("--builders", default="", help="builder host addresses (default: the controllers)")
@click.option("--servicehosts", default="", help="servicehost addresses")
@click.option("--runners", default="", help="runner host addresses")
@click.option("--routers", default="", help="router host addresses")
@click.option("--gateways", default="", help="gateway host addresses")
@click.option(
    "--backupds",
    default="",
    help="backup host addresses (backupd), comma-separated; two, for two locations: each "
    "pulls on its own and keeps its own history, the controllers ask each",
)
@click.option("--state", "state_url", default="", help="state database URL (postgresql://...)")
@click.option(
    "--state-hosts",
    default="",
    help="two hosts for the state database: a Patroni primary and its synchronous standby "
    "(instead of --state)",
)
@click.option(
    "--etcd-hosts",
    default="",
    help="with --state-hosts: Patroni's etcd members, three or more, an odd number "
    "(default: the controllers)",
)
@click.option(
    "--previous",
    "previous",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="an older cluster's bundle (or its keys/cluster.key_secret): its controllers' "
    "stored secrets stay readable",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("roost-cluster"),
    show_default=True,
    help="directory for the bundles, one per host (HOST.tar.gz)",
)
@click.option(
    "--shared-data/--no-shared-data",
    default=True,
    show_default=True,
    help="apps' data directories on SeaweedFS (two copies of every file), started by the "
    "roles themselves; needs a servicehost and two servicehost or runner hosts",
)
def init(
    name: str,
    controllers: str,
    builders: str,
    servicehosts: str,
    runners: str,
    routers: str,
    gateways: str,
    backupds: str,
    state_url: str,
    state_hosts: str,
    etcd_hosts: str,
    previous: Path | None,
    out: Path,
    shared_data: bool = True,
) -> None:
    """Make every host's keys and write a bundle per host for `cluster join`."""
    ctl = _addresses(controllers, "controllers")
    if not ctl:
        raise CliError("--controllers needs at least one address", EXIT_USAGE)
    service = _addresses(servicehosts, "servicehosts")
    statedb = _statedb_plan(name, ctl, state_url, state_hosts, etcd_hosts, len(service))
    if statedb is not None and statedb.patroni:
        state_url = statedb_url(statedb)
    if len(ctl) > 1 and (not state_url or state_url.startswith("sqlite")):
        raise CliError(
            "several controllers need a shared state database: pass --state postgresql://...",
            EXIT_USAGE,
        )
    hosts = plan_hosts(
        {
            "controller": ctl,
            "builder": _addresses(builders, "builders") or ctl,
            "servicehost": _addresses(servicehosts, "servicehosts"),
            "runner": _addresses(runners, "runners"),
            "router": _addresses(routers, "routers"),
            "gateway": _addresses(gateways, "gateways"),
            "backupd": _addresses(backupds, "backupds"),
        }
    )
    fernet = [new_key()]
    if previous is not None:
        fernet.append(legacy_key(_legacy_secret(previous)))
    # Two servicehosts or more come in pairs: each app's Redis under Sentinel,
    # and, given an etcd (the state database's), each pair's PostgreSQL
    # under Patroni; an odd last servicehost is a spare.
    paired = len(service) >= 2
    sentinel = secrets.token_urlsafe(24) if paired else ""
    pairs, spare = pgpair.plan_pairs(service, statedb.etcd) if paired and statedb else ([], [])
    # The shared tree's filers keep its metadata in a PostgreSQL state
    # database (a role of their own: Patroni's bootstrap makes it there).
    shared, no_shared = clusterdata.plan(hosts, shared_data, clusterdata.store_for(state_url))
    if shared is not None and shared.store is not None and statedb and statedb.patroni:
        statedb = msgspec.structs.replace(statedb, weed_password=shared.store.password)
    bundles = host_bundles(name, hosts, state_url, fernet, statedb, sentinel, pairs)
    if shared is not None:
        clusterdata.add_to_bundles(bundles, hosts, shared)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for host, files in bundles.items():
        path = out / f"{host}.tar.gz"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_tar(files))
        console.print(f"{path}: {', '.join(_parts(hosts.get(host, []), files))}")
    for p in pairs:
        console.print(f"servicehost {p.name}: {' and '.join(p.hosts)} (apps' PostgreSQL, Redis)")
    for h in spare:
        console.print(f"servicehost {h}: a spare (in no pair; takes no app while a pair has room)")
    if paired and not pairs:
        console.print(
            "servicehosts: each app's Redis is a pair; its PostgreSQL stays on one servicehost "
            "(pairs of PostgreSQL need an etcd: --state-hosts or --etcd-hosts)"
        )
    console.print(clusterdata.summary(shared) if shared else f"apps' data: {no_shared}")
    console.print(
        f"Wrote {len(bundles)} bundles in {out} (keep them secret: each holds its host's keys)."
    )
    console.print(f"On each host: roost --data DIR cluster join {out}/HOST.tar.gz")


def _parts(roles: list[str], files: dict[str, bytes]) -> list[str]:
    """What a host's bundle makes it run: its roles, and the state
    database's part or a sentinel of its own when its files say so."""
    # (A pair's pgpair.json is no part of its own: the servicehost runs it.)
    parts = roles + (["statedb"] if STATE_FILE in files else [])
    if f"keys/{SENTINEL_FILE}" in files and "servicehost" not in roles:
        parts.append("sentinel")  # a servicehost runs its own (redispairs.py)
    return parts


def _statedb_plan(
    name: str,
    controllers: list[str],
    state_url: str,
    state_hosts: str,
    etcd_hosts: str,
    servicehosts: int = 0,
) -> StateDbPlan | None:
    """The state database's plan when --state-hosts names its hosts; etcd's
    alone when --etcd-hosts names it for the servicehost pairs; else None."""
    patroni = _addresses(state_hosts, "state-hosts")
    if not patroni:
        if not etcd_hosts:
            return None
        if servicehosts < 2:
            raise CliError(
                "--etcd-hosts goes with --state-hosts, or with two servicehosts or more "
                "(their pairs' PostgreSQL)",
                EXIT_USAGE,
            )
        try:
            return etcd_plan(name, _addresses(etcd_hosts, "etcd-hosts"))
        except PlanError as exc:
            raise CliError(f"etcd: {exc}", EXIT_USAGE) from None
    if state_url:
        raise CliError("--state-hosts and --state both name the state database", EXIT_USAGE)
    try:
        return new_plan(name, _addresses(etcd_hosts, "etcd-hosts") or controllers, patroni)
    except PlanError as exc:
        hint = "" if etcd_hosts else " (--etcd-hosts: the controllers unless named)"
        raise CliError(f"state database: {exc}{hint}", EXIT_USAGE) from None


def _bundle_names() -> set[str]:
    names = {"cluster.json", f"keys/{PEERS_FILE}", f"keys/{FERNET_FILE}", STATE_FILE}
    names.add(pgpair.PAIR_FILE)
    names.add(f"keys/{SENTINEL_FILE}")
    names.add(clusterdata.PLAN_FILE)
    for role in ROLES:
        names |= {f"keys/{role}.key", f"keys/{role}.key_secret"}
    return names


def _read_bundle(bundle: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(bundle, mode="r:gz") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if (
                len(set(names)) != len(names)
                or not set(names) <= _bundle_names()
                or not {"cluster.json", f"keys/{PEERS_FILE}"} <= set(names)
                or not all(m.isfile() for m in members)
            ):
                raise CliError(f"{bundle} is not a Roost host bundle", EXIT_USAGE)
            files = {}
            for m in members:
                fh = tar.extractfile(m)
                assert fh is not None
                files[m.name] = fh.read()
            return files
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CliError(f"cannot read {bundle}: {exc}", EXIT_USAGE) from None


def _bundle_host(files: dict[str, bytes], bundle: Path) -> tuple[str, list[str]]:
    """The host a bundle is for and its roles, once every secret key in it is
    a listed member's and all are the same host's."""
    try:
        peers = parse_peers(files[f"keys/{PEERS_FILE}"])
    except PeerError as exc:
        raise CliError(f"{bundle}: {exc}", EXIT_USAGE) from None
    hosts, roles = set(), []
    for role in ROLES:
        secret = files.get(f"keys/{role}.key_secret")
        if secret is None:
            continue
        lines = secret.split()
        who = peers.get(lines[0]) if len(lines) == 2 else None
        if (
            who is None
            or who.role != role
            or files.get(f"keys/{role}.key", b"").strip() != lines[0]
        ):
            raise CliError(f"{bundle}: the {role} key is not the cluster's {role}", EXIT_USAGE)
        hosts.add(who.host)
        roles.append(role)
    if STATE_FILE in files:
        # A host may run only etcd or PostgreSQL: its statedb.json names it.
        try:
            plan = msgspec.json.decode(files[STATE_FILE], type=StateDbPlan)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CliError(f"{bundle}: {STATE_FILE}: {exc}", EXIT_USAGE) from None
        if hosts - {plan.host}:
            raise CliError(f"{bundle}: {STATE_FILE} is not this host's", EXIT_USAGE)
        hosts.add(plan.host)
    if pgpair.PAIR_FILE in files:
        try:
            mine = msgspec.json.decode(files[pgpair.PAIR_FILE], type=pgpair.PairPlan)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CliError(f"{bundle}: {pgpair.PAIR_FILE}: {exc}", EXIT_USAGE) from None
        if "servicehost" not in roles or hosts != {mine.host}:
            raise CliError(f"{bundle}: {pgpair.PAIR_FILE} is not this servicehost's", EXIT_USAGE)
    if clusterdata.PLAN_FILE in files:
        try:
            shared_host = clusterdata.bundle_host(files[clusterdata.PLAN_FILE])
        except ValueError as exc:
            raise CliError(f"{bundle}: {exc}", EXIT_USAGE) from None
        if hosts != {shared_host}:
            raise CliError(f"{bundle}: {clusterdata.PLAN_FILE} is not this host's", EXIT_USAGE)
    if len(hosts) != 1:
        raise CliError(f"{bundle} holds no single host's keys", EXIT_USAGE)
    return hosts.pop(), _parts(roles, files)


@cluster.command("join")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--systemd", is_flag=True, help="also write systemd units for this host's roles (roost install)"
)
@install.dir_option("--systemd-dir", help="with --systemd: where the units go")
@install.env_file_option("with --systemd: the settings file the units read")
@click.pass_context
def join(
    ctx: click.Context, bundle: Path, systemd: bool, systemd_dir: Path, env_file: Path
) -> None:
    """Unpack this host's BUNDLE (from `cluster init`) into its data directory."""
    data: Path = ctx.obj["data"]
    # Everything is checked before anything replaces what the host had.
    files = _read_bundle(bundle)
    host, roles = _bundle_host(files, bundle)
    try:
        config = msgspec.json.decode(files["cluster.json"], type=ClusterConfig)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CliError(f"{bundle}: cluster.json: {exc}", EXIT_USAGE) from None
    # Searchable but not listable, as `roost up` makes it: a builder's
    # unprivileged user must reach DATA/builder; keys/ stays 0700 itself.
    data.mkdir(parents=True, exist_ok=True, mode=0o711)
    (data / "keys").mkdir(mode=0o700, exist_ok=True)
    for rel, content in files.items():
        _write(data / rel, content)
    if "runner" in roles:
        # A runner's heartbeats must carry its key's host as the host id.
        runner = data / "runner"
        runner.mkdir(exist_ok=True)
        (runner / "host_id").write_text(host + "\n")
    console.print(f"Joined cluster {config.name} as {host}: {', '.join(roles)}.")
    # roost install writes units for the CURVE roles and a sentinel; the
    # state database's part has none yet and is started as its own command.
    daemons = [r for r in roles if r != "statedb"]
    if systemd and daemons:
        plan, written = install.install_units(data, daemons, systemd_dir, env_file)
        for path in written:
            console.print(f"wrote {path}")
        for line in install.next_steps(plan, systemd_dir):
            console.print(f"  {line}", soft_wrap=True)
    for role in roles if not systemd else [r for r in roles if r not in daemons]:
        # soft_wrap: a command to copy is never cut at the terminal's width.
        console.print(f"Start it with: roost --data {data} {role}", soft_wrap=True)


def _write(dest: Path, content: bytes) -> None:
    # Every file of a bundle is private (cluster.json has the state URL).
    tmp = dest.with_name(dest.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.replace(tmp, dest)


@cluster.command("admin-token")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    show_default=True,
    help="seconds to wait for a starting controller to write it",
)
@click.pass_context
def admin_token(ctx: click.Context, wait_s: float) -> None:
    """Print the admin account's API token, on a controller's host.

    The controller makes the admin account (admin@localhost) and writes a
    token of it to DATA/controller/admin.token at its start; this prints
    that token, so operators (and tests) can drive any controller with
    ROOST_API/ROOST_TOKEN. It never opens the state database itself.
    """
    data: Path = ctx.obj["data"]
    if not (data / "cluster.json").exists():
        raise CliError(
            f"{data / 'cluster.json'} not found: run 'roost cluster join BUNDLE' first", EXIT_USAGE
        )
    if not (data / "keys" / "controller.key_secret").exists():
        raise CliError(
            f"this host runs no controller (no {data / 'keys' / 'controller.key_secret'}): "
            "run this on a controller's host",
            EXIT_USAGE,
        )
    deadline = time.monotonic() + wait_s
    while not (token := read_admin_token(data)):
        if time.monotonic() >= deadline:
            raise CliError(
                f"no admin token in {admin_token_path(data)} yet: start this host's controller "
                f"(roost --data {data} controller), which writes it at its start"
            )
        time.sleep(0.2)
    click.echo(token)


cluster.add_command(clusterupgrade.upgrade)
