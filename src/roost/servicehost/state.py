"""The servicehost's own record of what it runs (DATA/servicehost/state.json).

It holds passwords, so it is written 0600, atomically (temp file + rename),
and only by the daemon's event loop. The controller keeps its own encrypted
copy of the credentials; this one lets the servicehost bring every server
back after a restart and answer a repeated provision with the same
credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from roost.datadir.s3plan import Ports
from roost.wire.messages import ServiceKind

RestoreKind = Literal["postgres", "redis", "data"]
# What state.json records: the wire's kinds and apps' S3 buckets (s3.py),
# which have messages of their own (wire: BucketProvision).
StoredKind = ServiceKind | Literal["s3"]
# prepared: a database waits for backupd's load (PostgreSQL); swapped: the
# restored data serves and what it replaced is kept; discarded: dropped.
RestoreStep = Literal["prepared", "swapped", "discarded"]


class PgCluster(msgspec.Struct, kw_only=True):
    port: int
    superuser: str = "roost"
    password: str
    initialized: bool = False
    # The backup role's (backuprole.py), made at backupd's first request.
    backup_password: str = ""


class Service(msgspec.Struct, kw_only=True):
    app: str
    kind: StoredKind
    port: int
    database: str = ""
    username: str = ""
    password: str
    memory_mb: int = 0
    # Redis: password of the "roost-admin" ACL user the daemon uses for SAVE,
    # CONFIG and SHUTDOWN, which the app's default user may not run.
    admin_password: str = ""
    # Redis: password of the "roost-backup" ACL user (SYNC only), for backupd.
    backup_password: str = ""
    # Redis in a pair (redispairs.py): the "roost-replica" user's password
    # ("" alone), and the master this copy last followed ("" while it was
    # master): its role when it starts and no sentinel agrees on one.
    replica_password: str = ""
    replica_of: str = ""


class S3Revoked(msgspec.Struct, kw_only=True):
    name: str
    access_key: str
    secret: str


class S3Node(msgspec.Struct, kw_only=True):
    """The servicehost's S3 server (servicehost/s3.py): made with the first
    bucket, kept after the last (its ports stay the apps' endpoint)."""

    ports: Ports  # (a dataclass: msgspec keeps it as an object of its fields)
    # The servicehost's own identity (Admin), never given to an app.
    admin_key: str
    admin_secret: str
    # Removed apps' keys, kept in the gateway's file with no action and a
    # secret nobody was given: a SIGHUP adds and replaces identities but
    # never forgets one the file no longer names (datadir/s3plan.py).
    revoked: list[S3Revoked] = []


class Restore(msgspec.Struct, kw_only=True):
    """One restore of one app's service or data directory, by backupd's id."""

    id: str
    app: str
    kind: RestoreKind
    step: RestoreStep
    at: float  # when it reached this step
    database: str = ""  # PostgreSQL: the prepared database
    target: str = ""  # PostgreSQL: the new database it becomes (`--to`), "" in place
    kept: str = ""  # the database or directory holding the data it replaced


class HostState(msgspec.Struct, kw_only=True):
    postgres: PgCluster | None = None
    services: dict[str, Service] = {}
    s3: S3Node | None = None
    restores: dict[str, Restore] = {}
    # The id of the host restore (ServiceHostRestore) whose services this
    # servicehost took on ("" when it made its own): a repeat finishes it.
    adopted: str = ""
    # Servicehosts replaced for good (addresses), as the controllers say
    # (servicehost/retirement.py): their sentinels are neither asked nor
    # counted. `replaced_by`: this one was, and serves nothing of its pair.
    retired: list[str] = []
    replaced_by: str = ""

    @staticmethod
    def key(app: str, kind: str) -> str:
        return f"{kind}/{app}"

    @staticmethod
    def restore_key(kind: str, app: str, restore_id: str) -> str:
        return f"{kind}/{app}/{restore_id}"

    def get(self, app: str, kind: str) -> Service | None:
        return self.services.get(self.key(app, kind))

    def of_kind(self, kind: str) -> list[Service]:
        return [s for s in self.services.values() if s.kind == kind]


def load_state(path: Path) -> HostState:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return HostState()
    return msgspec.json.decode(data, type=HostState)


def save_state(path: Path, state: HostState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.format(msgspec.json.encode(state)))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
