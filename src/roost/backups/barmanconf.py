"""Barman's configuration and what its commands print: pure functions over
data for `roost.backups.barman` (which re-exports them).

`render_config` writes barman.conf for Barman 3.4 (its ConfigParser reads
values with %-interpolation, so a '%' is doubled and a newline refused);
the parsers read `barman -f json` output and pg_waldump's; `window_of` and
`backup_for` are the window and the choice of base backup for a target
time, from those records.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from roost.backups.pgfacts import PG_BIN
from roost.wire.messages import PgSource

_COMMIT = re.compile(
    r"desc: (?:COMMIT|ABORT)\w*(?: \d+:)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


# ------------------------------------------------------------------ configuration (pure)


@dataclass(frozen=True)
class ServerConfig:
    name: str  # server_name(host id)
    source: PgSource
    recovery_window_days: int = 7
    # pg_basebackup's fast checkpoint: quick, but an I/O burst on the source.
    immediate_checkpoint: bool = False
    # A cluster the servicehost no longer runs (it was replaced by a new one,
    # another system identifier): its base backups and WAL stay for recovery
    # until retention removes them, but nothing streams or backs it up.
    retired: bool = False
    # The replication slot it streams through ("": the one `slot_name` names,
    # as every backupd did before several backupds pulled one cluster).
    slot: str = ""


def server_name(host_id: str) -> str:
    """A Barman server (and config section) name for a servicehost id."""
    name = re.sub(r"[^a-z0-9_-]", "-", host_id.lower()).strip("-") or "host"
    return name if name not in ("barman", "all") else f"host-{name}"


def generation_name(host_id: str, generation: int) -> str:
    """The Barman server of a servicehost's `generation`th cluster (1: the
    first, named after the host; a re-initialised or restored cluster is a
    new one to Barman, which refuses another system identifier)."""
    base = server_name(host_id)
    return base if generation <= 1 else f"{base}-g{generation}"


def advance(
    history: Sequence[tuple[str, str]], host_id: str, systemid: str
) -> list[tuple[str, str]]:
    """A host's clusters, oldest first, as (Barman server, system identifier),
    after seeing `systemid` on it ("" when it could not be asked: no change)."""
    if not history:
        return [(generation_name(host_id, 1), systemid)]
    last_server, last_id = history[-1]
    if not systemid or systemid == last_id:
        return list(history)
    if not last_id:  # first asked now: the cluster Barman already streams
        return [*history[:-1], (last_server, systemid)]
    return [*history, (generation_name(host_id, len(history) + 1), systemid)]


def inherit(
    history: Mapping[str, Sequence[tuple[str, str]]],
    host_id: str,
    old: str,
    systemid: str,
    alone: bool,
) -> bool:
    """Whether the servicehost `host_id` takes on the clusters an older
    backupd recorded under its key's name `old`, Barman servers, slots and
    all (new ones beside them would leave the old slot holding WAL on the
    servicehost for ever, and the window would start again): when its
    cluster's system identifier is the one recorded last, or, either not
    known, when it is `alone` in answering by that name. Pure."""
    if host_id == old or host_id in history or not history.get(old):
        return False
    last_id = history[old][-1][1]
    if last_id and systemid:
        return last_id == systemid
    return alone


def slot_name(server: str) -> str:
    """The slot every backupd's Barman server used when only one backupd
    pulled a cluster: still that of a Barman server made then."""
    return ("barman_" + re.sub(r"[^a-z0-9_]", "_", server))[:63]


def own_slot_name(backupd: str, server: str) -> str:
    """The slot of `backupd`'s Barman server `server`: each backupd streams
    a cluster through its own (two on one slot would take it from each
    other). A PostgreSQL name: [a-z0-9_], at most 63 bytes; the hash of
    both names keeps two backupds whose names read alike apart."""
    readable = re.sub(r"[^a-z0-9_]", "_", f"barman_{server}_{backupd}".lower())
    digest = hashlib.sha256(f"{backupd}\0{server}".encode()).hexdigest()[:8]
    return f"{readable[:54]}_{digest}"


def slots_for(
    servers: Sequence[str], backupd: str, known: Mapping[str, str], existing: Collection[str]
) -> dict[str, str]:
    """Each Barman server's slot: the one it was given before (`known`), the
    old shared name for a server an older backupd made (`existing`: it
    streams through that slot already, and a new one would leave the old
    holding WAL on the servicehost for ever), else this backupd's own."""
    return {
        s: known.get(s) or (slot_name(s) if s in existing else own_slot_name(backupd, s))
        for s in servers
    }


def _value(v: str) -> str:
    """A value as Barman's ConfigParser reads it back (%-interpolation on)."""
    if "\n" in v or "\r" in v:
        raise ValueError(f"a newline in a Barman setting: {v!r}")
    return v.replace("%", "%%")


def _conninfo(parts: dict[str, str]) -> str:
    def quote(v: str) -> str:
        if v and not re.search(r"[\s'\\]", v):
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quote(v)}" for k, v in parts.items())


def conninfo_of(source: PgSource, passfile: Path) -> str:
    """A server's streaming_conninfo: where its source is, who connects, and
    the libpq passfile with the password (never in the conninfo itself). A
    pair's (`source.pair`) names both members and asks for the one that
    takes writes: pg_receivewal and pg_basebackup, started again after a
    failover, reach the new primary, with no configuration to change."""
    parts = {"host": source.host, "port": str(source.port), "user": source.user,
             "passfile": str(passfile)}  # fmt: skip
    if source.pair:
        # A primary whose host died leaves the receiver's connection open,
        # no RST ever coming: its unacknowledged status updates time out
        # (tcp_user_timeout, ms) and idle keepalives fail within ~10 s, so
        # pg_receivewal exits and is started again, onto the new primary.
        parts |= {
            "target_session_attrs": "read-write",
            "tcp_user_timeout": "10000",
            "keepalives_idle": "5",
            "keepalives_interval": "2",
            "keepalives_count": "3",
        }
    return _conninfo(parts)


def _members(host: str) -> list[str]:
    return sorted(host.split(","))


def ordered_servers(
    servers: Sequence[ServerConfig], orders: Mapping[str, str]
) -> list[ServerConfig]:
    """The servers as barman.conf lists them: a pair's members in the order
    last found for it (`orders`: server -> its hosts, comma-separated, the
    primary first), when that order names the same members as its source
    now; every other server, and a pair whose members changed since, as
    given. Pure."""
    out = []
    for s in servers:
        order = orders.get(s.name, "")
        if s.source.pair and order and _members(order) == _members(s.source.host):
            s = replace(s, source=msgspec.structs.replace(s.source, host=order))
        out.append(s)
    return out


def kept_orders(orders: Mapping[str, str], servers: Sequence[ServerConfig]) -> dict[str, str]:
    """Of the orders found (`ordered_servers`), those that still apply to
    `servers`: of a pair server still there whose members are the same
    (a source that changed them, or a server gone, drops its order). Pure."""
    by_name = {s.name: s for s in servers}
    return {
        name: order
        for name, order in orders.items()
        if (s := by_name.get(name)) is not None
        and s.source.pair
        and _members(order) == _members(s.source.host)
    }


def passfile_line(source: PgSource) -> str:
    """The source's lines in a libpq passfile (host:port:db:user:password):
    one per member of a pair, since libpq matches the host it connects to."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    hosts = source.host.split(",") if source.pair else [source.host]
    return "\n".join(":".join([esc(h), str(source.port), "*", esc(source.user),
                               esc(source.password)]) for h in hosts)  # fmt: skip


def render_config(
    *,
    home: Path,
    log_file: Path,
    user: str,
    passfile: Path,
    servers: Sequence[ServerConfig],
    pg_bin: Path = PG_BIN,
) -> str:
    """barman.conf: the global section and one section per servicehost cluster."""
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise ValueError(f"two Barman servers with one name: {sorted(names)}")
    lines = [
        "; Written by roost backupd; edits here are lost.",
        "[barman]",
        f"barman_home = {_value(str(home))}",
        f"barman_user = {_value(user)}",
        f"log_file = {_value(str(log_file))}",
        "log_level = INFO",
        "",
    ]
    for s in servers:
        if s.recovery_window_days < 1:
            raise ValueError(f"{s.name}: the recovery window must be at least a day")
        if s.slot and not re.fullmatch(r"[a-z0-9_]{1,63}", s.slot):
            raise ValueError(f"{s.name}: {s.slot!r} is not a replication slot's name")
        streaming = conninfo_of(s.source, passfile)
        conninfo = f"{streaming} dbname=postgres application_name=barman"
        what = "Retired cluster " if s.retired else "Roost servicehost "
        lines += [
            f"[{s.name}]",
            f"description = {_value(what + s.name)}",
            f"conninfo = {_value(conninfo)}",
            f"streaming_conninfo = {_value(streaming)}",
            "backup_method = postgres",
            "archiver = off",
            "streaming_archiver = on",
            f"slot_name = {_value(s.slot or slot_name(s.name))}",
            "create_slot = auto",
            f"retention_policy = RECOVERY WINDOW OF {s.recovery_window_days} DAYS",
            "minimum_redundancy = 1",
            f"path_prefix = {_value(str(pg_bin))}",
            f"immediate_checkpoint = {'true' if s.immediate_checkpoint else 'false'}",
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------ what Barman says (pure)


@dataclass(frozen=True)
class BaseBackup:
    id: str
    server: str
    status: str  # DONE, WAITING_FOR_WALS, FAILED, ...
    end: datetime | None  # to the second from list-backups, exact from show-backup
    size: int = 0
    retention: str = ""  # VALID, OBSOLETE, ... ("-" without a policy verdict)


@dataclass(frozen=True)
class Window:
    earliest: datetime  # the end of the oldest base backup
    latest: datetime  # the newest commit Barman holds (a target must be before it)

    def holds(self, at: datetime) -> bool:
        return self.earliest <= at < self.latest

    def __str__(self) -> str:
        return f"{iso(self.earliest)} to {iso(self.latest)}"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def parse_list_backups(text: str, server: str) -> list[BaseBackup]:
    """`barman -f json list-backups SERVER`, oldest first."""
    out = []
    for b in json.loads(text).get(server, []):
        ts = b.get("end_time_timestamp")
        end = datetime.fromtimestamp(int(ts), UTC) if ts not in (None, "", "None") else None
        out.append(BaseBackup(
            id=str(b["backup_id"]), server=server, status=str(b.get("status", "")), end=end,
            size=int(b.get("size_bytes") or 0), retention=str(b.get("retention_status", "")),
        ))  # fmt: skip
    return sorted(out, key=lambda b: b.id)


def parse_show_backup(text: str, server: str) -> BaseBackup:
    b = json.loads(text)[server]
    info = b.get("base_backup_information", {})
    end = info.get("end_time")
    return BaseBackup(
        id=str(b["backup_id"]),
        server=server,
        status=str(b.get("status", "")),
        end=datetime.fromisoformat(end) if end else None,
        size=int(info.get("disk_usage_bytes") or 0),
        retention=str(b.get("catalog_information", {}).get("retention_policy", "")),
    )


def parse_check(text: str, server: str) -> list[str]:
    """The failed checks of `barman -f json check SERVER`, as "check: hint"."""
    checks = json.loads(text).get(server, {})
    return [
        f"{name.replace('_', ' ')}: {c.get('hint', '')}".rstrip(": ")
        for name, c in sorted(checks.items())
        if c.get("status") != "OK"
    ]


def commit_times(waldump: str) -> list[datetime]:
    """Commit and abort times in pg_waldump's output (run with TZ=UTC)."""
    return [
        datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC) for m in _COMMIT.finditer(waldump)
    ]


def window_of(backups: Sequence[BaseBackup], last_commit: datetime | None) -> Window | None:
    """The point-in-time window: from the oldest complete base backup's end to
    the newest commit held (`backups` with exact end times)."""
    ends = [b.end for b in backups if b.status == "DONE" and b.end is not None]
    if not ends:
        return None
    earliest = min(ends)
    return Window(earliest, max(earliest, last_commit) if last_commit else earliest)


def backup_for(backups: Sequence[BaseBackup], at: datetime) -> BaseBackup | None:
    """The newest complete base backup that ended by `at` (exact end times)."""
    done = [b for b in backups if b.status == "DONE" and b.end is not None and b.end <= at]
    return max(done, key=lambda b: b.end or at) if done else None
