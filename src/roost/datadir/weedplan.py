"""Which SeaweedFS process runs where in a cluster, and how (pure: no I/O).

`roost cluster init` makes one `WeedPlan` from the hosts it is given and
writes `for_host(plan, host, roles)` into each taking part as appdata.json;
on the host, the role that owns a part (`parts_for`) renders its command
lines (`programs`) from that file alone and supervises them
(roost.datadir.weednode).

  master   on the controller hosts: three when there are three or more
           (Raft: one may die), else one on the first
  filer    one, on the first controller host, its metadata in its own
           embedded store. Not two: `weed mount` (4.48) does not fail over
           to a second filer (tried: with the first killed, a write through
           the mount failed with EIO and the other mount never saw the
           file), so a second filer would add a process and no availability
  volume   on every servicehost and runner host: placement 001 puts each
           file on two of them, and a third keeps new writes going while
           one is down
  mount    `weed mount` at the apps' data root on every servicehost and
           runner host (the gateways relay rsync/scp/sftp to the
           servicehost, which reads the tree itself: a gateway host needs
           no mount)

On a host that runs several roles, the controller owns the master and the
filer, the servicehost (else the runner) the volume server and the mount,
so that one process supervises each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from roost.datadir import seaweed
from roost.datadir.seaweed import Endpoint

PLAN_FILE = "appdata.json"
PARTS = ("master", "filer", "volume", "mount")
# One on the first controller, or three for a Raft majority that outlives one.
RAFT_MASTERS = 3
# Below this, placement 001 (two copies on two servers) cannot place a file.
MIN_VOLUMES = 2


class PlanError(ValueError):
    """The hosts named cannot hold a shared tree."""


class WeedPlan(msgspec.Struct, frozen=True, kw_only=True):
    masters: list[str]
    filer: str
    volumes: list[str]  # volume server and mount hosts
    host: str = ""  # whose file this is ("" in the plan itself)
    roles: list[str] = []  # this host's roles (who owns which part)
    # Fixed ports, as the address book's; weed's gRPC port is each +10000.
    master_port: int = 7150
    volume_port: int = 7151
    filer_port: int = 7152


def new_plan(controllers: list[str], storage: list[str]) -> WeedPlan:
    """The plan for these controller and storage (servicehost and runner) hosts."""
    if not controllers:
        raise PlanError("a shared tree needs a controller host for its master")
    volumes = list(dict.fromkeys(storage))
    if len(volumes) < MIN_VOLUMES:
        raise PlanError(
            f"two copies of every file need two storage hosts (servicehosts and runners), "
            f"got {len(volumes)}"
        )
    masters = controllers[:RAFT_MASTERS] if len(controllers) >= RAFT_MASTERS else controllers[:1]
    return WeedPlan(masters=list(masters), filer=controllers[0], volumes=volumes)


def hosts_of(plan: WeedPlan) -> list[str]:
    return list(dict.fromkeys([*plan.masters, plan.filer, *plan.volumes]))


def for_host(plan: WeedPlan, host: str, roles: list[str]) -> WeedPlan:
    if host not in hosts_of(plan):
        raise PlanError(f"{host} runs no part of the shared tree")
    return msgspec.structs.replace(plan, host=host, roles=list(roles))


def owner(plan: WeedPlan, part: str) -> str:
    """The role on this host that runs `part` ("" when none here does)."""
    if part in ("master", "filer"):
        here = plan.host in plan.masters if part == "master" else plan.host == plan.filer
        return "controller" if here and "controller" in plan.roles else ""
    if plan.host not in plan.volumes:
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


def programs(plan: WeedPlan, role: str, weed: str, data_dir: Path, mount: Path) -> list[Program]:
    """`role`'s processes on this host; their directories live under DATA/weed."""
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
            argv = seaweed.filer_argv(weed, at, first_master, base / "filer")
            argv = _replace(argv, "-master", masters)
        elif part == "volume":
            at = Endpoint(me, plan.volume_port)
            argv = seaweed.volume_argv(weed, at, base / "volume", first_master)
            argv = _replace(argv, "-mserver", masters)
        else:
            filer = Endpoint(plan.filer, plan.filer_port)
            argv = seaweed.mount_argv(weed, filer, mount, base / "mount-cache")
        out.append(Program(part, argv))
    return out
