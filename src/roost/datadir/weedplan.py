"""Which SeaweedFS process runs where in a cluster, and how (pure: no I/O).

`roost cluster init` makes one `WeedPlan` from the hosts it is given and
writes `for_host(plan, host, roles)` into each taking part as appdata.json;
on the host, the role that owns a part (`parts_for`) renders its command
lines (`programs`) from that file alone and supervises them
(roost.datadir.weednode).

  master   on the controller hosts: three when there are three or more
           (Raft: one may die), else one on the first
  filer    with a PostgreSQL state database: two, keeping the tree's
           metadata in one store of their own in that PostgreSQL
           (`postgres2`: a database and role of their own, made by
           Patroni's bootstrap or the controller, roost.datadir.weedstore),
           on the first two controller hosts, else on the controller host
           and the first storage host; every mount reaches them through
           its host's front, so all follow the first while it lives and
           the second while it does not (roost.datadir.filerfront).
           With SQLite state: one, on the first controller host, its
           metadata in its own embedded store (that host's loss loses the
           tree's names: two filers with stores of their own replay each
           other's changes late, so a file created just before one died
           could be missing from the other)
  volume   on every servicehost and runner host: placement 001 puts each
           file on two of them, and a third keeps new writes going while
           one is down
  front    with two filers, on every host that mounts: HAProxy handing
           the mounts' filer connections to the first filer, else the
           second (filerfront.py)
  s3       with two filers and `s3_gateways`, on every host that runs a
           front: a `weed s3` gateway given that front as its filer
           (s3gateway.py)
  mount    `weed mount` at the apps' data root on every servicehost and
           runner host (the gateways relay rsync/scp/sftp to the
           servicehost, which reads the tree itself: a gateway host needs
           no mount)

On a host that runs several roles, the controller owns the master and the
filer, the servicehost (else the runner) the volume server, the front,
the S3 gateway and the mount (and a filer on a host without a controller), so that one process
supervises each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import msgspec

from roost.datadir import filerfront, s3gateway, seaweed
from roost.datadir.seaweed import Endpoint

PLAN_FILE = "appdata.json"
PARTS = ("master", "filer", "volume", "front", "s3", "mount")
# One on the first controller, or three for a Raft majority that outlives one.
RAFT_MASTERS = 3
# Below this, placement 001 (two copies on two servers) cannot place a file.
MIN_VOLUMES = 2


class PlanError(ValueError):
    """The hosts named cannot hold a shared tree."""


# The filers' own database and role in the state database's PostgreSQL.
STORE_NAME = "roost_weed"
FILERS = 2


class FilerStore(msgspec.Struct, frozen=True, kw_only=True):
    """Where the filers keep the tree's metadata: SeaweedFS's `postgres2`."""

    hosts: list[str]  # PostgreSQL's hosts (two under Patroni: the writable one is used)
    port: int
    database: str = STORE_NAME
    user: str = STORE_NAME
    password: str = ""  # only in the bundles of the hosts that run a filer


class WeedPlan(msgspec.Struct, frozen=True, kw_only=True):
    masters: list[str]
    filer: str  # the first filer (what an older reader runs and mounts)
    volumes: list[str]  # volume server and mount hosts
    filers: list[str] = []  # every filer, the first first ([] in an older file: `filer`)
    store: FilerStore | None = None  # None: each filer's embedded store
    host: str = ""  # whose file this is ("" in the plan itself)
    roles: list[str] = []  # this host's roles (who owns which part)
    # Fixed ports, as the address book's; weed's gRPC port is each +10000.
    master_port: int = 7150
    volume_port: int = 7151
    filer_port: int = 7152
    s3_port: int = s3gateway.S3_PORT
    # The S3 gateways run only when the plan says so (an older plan, which
    # never ran them, says nothing): `cluster init` sets it with two filers,
    # and a servicehost then makes apps' buckets in the tree through them
    # (s3cluster.py; docs/architecture.md, "Apps' S3 buckets").
    s3_gateways: bool = False


def new_plan(
    controllers: list[str], storage: list[str], store: FilerStore | None = None
) -> WeedPlan:
    """The plan for these controller and storage (servicehost and runner)
    hosts; two filers sharing `store` when one is given, else one."""
    if not controllers:
        raise PlanError("a shared tree needs a controller host for its master")
    volumes = list(dict.fromkeys(storage))
    if len(volumes) < MIN_VOLUMES:
        raise PlanError(
            f"two copies of every file need two storage hosts (servicehosts and runners), "
            f"got {len(volumes)}"
        )
    masters = controllers[:RAFT_MASTERS] if len(controllers) >= RAFT_MASTERS else controllers[:1]
    if store is None:
        filers = controllers[:1]
    else:
        # A second controller host, else the first storage host that is not
        # the first controller's: never both filers on one host.
        others = [h for h in [*controllers[1:], *volumes] if h != controllers[0]]
        filers = [controllers[0], *others[: FILERS - 1]]
    return WeedPlan(
        masters=list(masters), filer=filers[0], filers=filers, volumes=volumes, store=store
    )


def filers_of(plan: WeedPlan) -> list[str]:
    return plan.filers or [plan.filer]


def mount_filer(plan: WeedPlan) -> str:
    """`weed mount -filer=`'s value on this host: the one filer, or this
    host's front to the two (filerfront.py says why not both)."""
    if len(filers_of(plan)) > 1:
        return str(filerfront.front(plan.host))
    return str(Endpoint(filers_of(plan)[0], plan.filer_port))


def hosts_of(plan: WeedPlan) -> list[str]:
    return list(dict.fromkeys([*plan.masters, *filers_of(plan), *plan.volumes]))


def for_host(plan: WeedPlan, host: str, roles: list[str]) -> WeedPlan:
    if host not in hosts_of(plan):
        raise PlanError(f"{host} runs no part of the shared tree")
    store = plan.store
    if store is not None and host not in filers_of(plan):
        store = msgspec.structs.replace(store, password="")  # a filer's secret
    return msgspec.structs.replace(plan, host=host, roles=list(roles), store=store)


def owner(plan: WeedPlan, part: str) -> str:
    """The role on this host that runs `part` ("" when none here does)."""
    if part == "master":
        return "controller" if plan.host in plan.masters and "controller" in plan.roles else ""
    if part == "filer":
        if plan.host not in filers_of(plan):
            return ""
        if "controller" in plan.roles:
            return "controller"
    elif (
        plan.host not in plan.volumes
        or (part in ("front", "s3") and len(filers_of(plan)) < 2)
        or (part == "s3" and not plan.s3_gateways)
    ):
        return ""
    for role in ("servicehost", "runner"):
        if role in plan.roles:
            return role
    return ""


def parts_for(plan: WeedPlan, role: str) -> list[str]:
    """What `role` runs on this host, in start order."""
    return [p for p in PARTS if owner(plan, p) == role]


@dataclass(frozen=True)
class Program:
    name: str  # a part
    argv: list[str]


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `-flag=...` saying `value` (seaweed.py names one master)."""
    return [f"{flag}={value}" if a.startswith(f"{flag}=") else a for a in argv]


def home(data_dir: Path) -> Path:
    return data_dir / "weed"


def filer_dir(data_dir: Path) -> Path:
    """The filer's `-defaultStoreDir` (its embedded store, when it has one)."""
    return home(data_dir) / "filer"


def programs(
    plan: WeedPlan, role: str, weed: str, data_dir: Path, mount: Path, haproxy: str = "haproxy"
) -> list[Program]:
    """`role`'s processes on this host; their directories live under DATA/weed
    (the front's configuration too: `front_config`)."""
    base = home(data_dir)
    me = plan.host
    masters = ",".join(str(Endpoint(h, plan.master_port)) for h in plan.masters)
    first_master = Endpoint(plan.masters[0], plan.master_port)
    out = []
    for part in parts_for(plan, role):
        if part == "master":
            argv = seaweed.master_argv(weed, Endpoint(me, plan.master_port), base / "master")
            if len(plan.masters) > 1:
                argv.append(f"-peers={masters}")
        elif part == "filer":
            at = Endpoint(me, plan.filer_port)
            argv = seaweed.filer_argv(weed, at, first_master, filer_dir(data_dir))
            argv = _replace(argv, "-master", masters)
        elif part == "volume":
            at = Endpoint(me, plan.volume_port)
            argv = seaweed.volume_argv(weed, at, base / "volume", first_master)
            argv = _replace(argv, "-mserver", masters)
        elif part == "front":
            argv = filerfront.argv(haproxy, str(base / filerfront.CONFIG_FILE))
        elif part == "s3":
            at = Endpoint(me, plan.s3_port)
            argv = s3gateway.argv(weed, at, filerfront.front(me))
        else:
            filer = Endpoint(plan.filer, plan.filer_port)
            argv = seaweed.mount_argv(weed, filer, mount, base / "mount-cache")
            argv = _replace(argv, "-filer", mount_filer(plan))
        out.append(Program(part, argv))
    return out


def front_config(plan: WeedPlan) -> str:
    """This host's filer front's configuration (the filers in plan order)."""
    return filerfront.config(plan.host, filers_of(plan), plan.filer_port)


STORE_FILE = "filer.toml"  # read by `weed filer` from its working directory (DATA/weed)


def _quoted(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.,:\[\]-]*", value):
        raise PlanError(f"the filer store: {value!r} is not a host, name or token")
    return f'"{value}"'


# Where the filers keep S3 buckets (weed's default is /buckets). Every
# mounting host mounts the tree's root at ROOT, where each app's data
# directory is ROOT/APP: /buckets would be the tree of an app named
# `buckets`, every app's objects in it. App names never start with a dot
# (the controller's `^[a-z0-9_-]{1,30}$`, the servicehost's and
# appdirs' `[a-z0-9_-]` rules), so /.buckets is no app's.
BUCKETS_FOLDER = "/.buckets"


def filer_toml(store: FilerStore | None, store_dir: Path) -> str:
    """The filers' filer.toml: buckets in `BUCKETS_FOLDER`, and where the
    tree's metadata is: the shared `postgres2` store when the plan gives
    one, else the filer's embedded LevelDB in `store_dir` (its
    `-defaultStoreDir`), in the very directory weed picks without a
    filer.toml (`filerldb2`), so an existing filer keeps its tree. weed 4.48
    uses that default only when it finds no filer.toml (measured: a file
    with no store section and the filer exits listing the stores)."""
    options = [
        "# Written by roost from appdata.json.",
        "[filer.options]",
        f'buckets_folder = "{BUCKETS_FOLDER}"',
        "",
    ]
    if store is None:
        leveldb = str(store_dir / "filerldb2")
        if '"' in leveldb or "\\" in leveldb or "\n" in leveldb:
            raise PlanError(f"the filer's store directory {leveldb!r} cannot be quoted")
        return "\n".join([*options, "[leveldb2]", "enabled = true", f'dir = "{leveldb}"', ""])
    return "\n".join(options) + _postgres2(store)


def _postgres2(store: FilerStore) -> str:
    """The tree's metadata in PostgreSQL. pgx (4.48's driver) takes a host list
    and tries each; `target_session_attrs` keeps the writable one (Patroni's
    primary, wherever it is): postgres2 has no field for it, and appends the
    hostname to its key=value connection string as it is."""
    if not store.hosts:
        raise PlanError("the filer store names no PostgreSQL host")
    hosts = ",".join(_quoted(h)[1:-1] for h in store.hosts)
    if len(store.hosts) > 1:
        hosts += " target_session_attrs=read-write"
    return "\n".join(
        [
            "[postgres2]",
            "enabled = true",
            'createTable = """',
            '  CREATE TABLE IF NOT EXISTS "%s" (',
            "    dirhash BIGINT, name VARCHAR(65535), directory VARCHAR(65535), meta bytea,",
            "    PRIMARY KEY (dirhash, name)",
            "  );",
            '"""',
            f'hostname = "{hosts}"',
            f"port = {int(store.port)}",
            f"username = {_quoted(store.user)}",
            f"password = {_quoted(store.password)}",
            f"database = {_quoted(store.database)}",
            'schema = ""',
            'sslmode = "prefer"',
            "connection_max_idle = 4",
            "connection_max_open = 16",
            "connection_max_lifetime_seconds = 300",
            "enableUpsert = true",
            'upsertQuery = """',
            '  INSERT INTO "%[1]s" (dirhash, name, directory, meta) VALUES($1, $2, $3, $4)',
            "  ON CONFLICT (dirhash, name) DO UPDATE SET",
            "    directory=EXCLUDED.directory, meta=EXCLUDED.meta",
            '"""',
            "",
        ]
    )
