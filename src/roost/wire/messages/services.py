"""Controller <-> servicehost: apps' databases and Redis, and the hosts' status.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.wire.messages.base import Msg

# ---------------------------------------------------------------- services (servicehost)

ServiceKind = Literal["postgres", "redis"]
ServerState = Literal["starting", "up", "backoff", "stopping", "stopped"]


class RedisCopy(msgspec.Struct, frozen=True, kw_only=True):
    """What the other servicehost of a pair needs to run an app's Redis as
    the replica of this one: the same port and passwords (either copy may
    become master), and the master's address now."""

    port: int
    memory_mb: int
    password: str
    admin_password: str
    backup_password: str
    replica_password: str
    master_host: str


class ServiceProvision(Msg, frozen=True, kw_only=True):
    """Create (or return the existing) `kind` service of `app`; idempotent.

    `memory_mb` is Redis's maxmemory (0 = the servicehost's default); asking
    again with another value changes the limit of the running server.
    `copy_of`: a Redis pair's second copy, the replica of the one whose
    provision answered it (ServiceCredentials.copy).
    """

    app: str
    kind: ServiceKind
    memory_mb: int = 0
    copy_of: RedisCopy | None = None


class ServiceCredentials(Msg, frozen=True, kw_only=True):
    app: str
    kind: ServiceKind
    host: str
    port: int
    database: str = ""  # postgres: database name; redis: "0"
    username: str = ""  # "" for redis (the default user)
    password: str
    url: str  # DATABASE_URL / REDIS_URL
    # A Redis on a servicehost of a pair: what its partner's provision needs
    # (ServiceProvision.copy_of). Secrets: passed on, never stored.
    copy: RedisCopy | None = None


class ServiceDeprovision(Msg, frozen=True, kw_only=True):
    """Back the service up one last time, then drop its data (idempotent)."""

    app: str
    kind: ServiceKind


class ServiceRemoved(Msg, frozen=True, kw_only=True):
    app: str
    kind: ServiceKind
    # The final backup ("" when there was nothing to remove).
    backup_path: str = ""


# An app's S3 bucket (servicehost/s3.py): messages of their own, since
# ServiceKind's values are fixed within a protocol (roost.wire.version).


class BucketProvision(Msg, frozen=True, kw_only=True):
    """A bucket for the app and a key that opens it alone (idempotent)."""

    app: str


# The host a cluster's servicehost names in every bucket's credentials: each
# app reaches the S3 gateway on its own runner's host, and credentials are
# per app, not per runner, so each runner puts its own address in its place
# when it builds a process's environment (runner/s3local.py). Under the
# reserved .invalid domain: it never resolves, so a runner that does not
# replace it fails to connect rather than connecting elsewhere.
RUNNER_S3_HOST = "s3.runner.roost.invalid"


class BucketCredentials(Msg, frozen=True, kw_only=True):
    app: str
    host: str  # RUNNER_S3_HOST from a cluster's servicehost (its gateways)
    port: int
    bucket: str
    access_key: str
    secret_key: str
    url: str  # the endpoint (AWS_S3_ENDPOINT_URL)


class BucketDeprovision(Msg, frozen=True, kw_only=True):
    """A final backup of every object, then the key revoked and the bucket
    deleted (idempotent)."""

    app: str


class BucketRemoved(Msg, frozen=True, kw_only=True):
    app: str
    backup_path: str = ""  # "" when there was no bucket


# backupd's side of a bucket (servicehost/bucketbackup.py): a bucket is backed
# up and restored with the app's data directory (the "data" kind), since
# BackupKind's values are fixed within a protocol as ServiceKind's are.


class BucketPull(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: every object of the app's bucket, as a tar.gz
    (the removal's final backup, read and size-checked the same way)."""

    app: str


class BucketArchive(Msg, frozen=True, kw_only=True):
    app: str
    archive: bytes  # a tar.gz: one member per object, named by its key
    objects: int = 0


class BucketRestore(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: the app's bucket becomes exactly this tar.gz's
    objects (replaced whole, as a data directory is); what it held before is
    kept as a tar.gz among the app's backups on the servicehost."""

    app: str
    restore_id: str
    archive: bytes


class BucketRestored(Msg, frozen=True, kw_only=True):
    app: str
    objects: int = 0
    kept: str = ""  # where the replaced objects were kept


class ServiceBackup(Msg, frozen=True, kw_only=True):
    app: str
    kind: ServiceKind


class ServiceBackupDone(Msg, frozen=True, kw_only=True):
    path: str
    size: int


class ServiceHostStatusRequest(Msg, frozen=True, kw_only=True):
    pass


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One server. The PostgreSQL cluster itself is app "" / kind "postgres";
    each app's database is a row of its own (its cluster's state, port and pid,
    and the database's size); each Redis server is one row.
    """

    app: str
    kind: ServiceKind
    state: ServerState
    port: int = 0
    pid: int = 0
    disk_bytes: int = 0
    restarts: int = 0
    last_error: str = ""
    # An app's database: its role's CONNECTION LIMIT and the sessions it holds.
    connection_limit: int = 0
    connections: int = 0
    # An app's Redis: maxmemory, memory in use (bytes), its eviction policy.
    memory_limit_bytes: int = 0
    memory_used_bytes: int = 0
    eviction_policy: str = ""
    # An app's Redis: why its snapshots (RDB saves, AOF rewrites) are off
    # ("" while they are on): one would not fit on the disk.
    snapshot_problem: str = ""
    # An app's Redis in a pair: "master" or "replica" ("" alone), the other
    # copy ("host:port"), how far the replica is behind (bytes of stream),
    # and what is wrong with the replication ("" when nothing is).
    redis_role: str = ""
    redis_peer: str = ""
    redis_lag_bytes: int = 0
    redis_problem: str = ""


class KeptCopy(msgspec.Struct, frozen=True, kw_only=True):
    """Data a restore replaced, kept until it is purged (ROOST_ARCHIVE_DAYS)."""

    app: str
    kind: Literal["postgres", "redis", "data"]
    name: str  # the database, or the directory, it is kept in
    kept_at: float


class DataUse(msgspec.Struct, frozen=True, kw_only=True):
    """An app's data directory with a quota (roost.datadir.quota): bytes
    stored, and the most it may store."""

    app: str
    used_bytes: int
    quota_bytes: int


class ServiceHostStatus(Msg, frozen=True, kw_only=True):
    servers: list[ServerStatus] = []
    data: list[DataUse] = []
    disk_free_bytes: int = 0
    disk_total_bytes: int = 0
    # Who sent it (key name) and when (unix time): pushed to the controllers.
    host: str = ""
    sent_at: float = 0.0
    kept: list[KeptCopy] = []
    # The servicehost's host id: the host of its identity, unique in a
    # cluster (its key name is "servicehost" on every host). The controller
    # records it as the holder of what it provisions there. "" from older
    # servicehosts (then `host` stands in).
    host_id: str = ""


class RetiredHosts(Msg, frozen=True, kw_only=True):
    """A controller's answer to a ServiceHostStatus push when servicehosts
    have been replaced for good (controller/retired.py): their addresses,
    whose sentinels no servicehost asks or counts any more. `replaced_by`
    is set when the sender is one of them: it no longer belongs to the
    platform, its push is not taken, and it stops serving its old pair's
    copies (servicehost/retirement.py). A controller with none retired
    answers Ok, which older servicehosts expect."""

    addresses: list[str]
    replaced_by: str = ""
